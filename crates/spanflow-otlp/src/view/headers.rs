//! [`ResourceView`] and [`ScopeView`]: the `ResourceSpans` and `ScopeSpans` headers
//! (resource, instrumentation scope, schema URLs), read from the byte ranges the index keeps.

use std::fmt;

use super::attributes::Attributes;
use super::fields::{as_str, last_len};
use super::value::AnyValueView;
use crate::request::Index;
use crate::wire::{Fields, Value};

/// Header ranges (everything but the children) of a resource or scope.
fn header_ranges(extras: &[[u32; 2]], range: [u32; 2]) -> &[[u32; 2]] {
    extras
        .get(range[0] as usize..range[1] as usize)
        .unwrap_or(&[])
}

fn last_nested_str<'a>(
    buf: &'a [u8],
    ranges: &[[u32; 2]],
    wrapper: u32,
    number: u32,
) -> Option<&'a str> {
    let mut found = None;
    for r in ranges {
        let header = buf.get(r[0] as usize..r[1] as usize).unwrap_or(&[]);
        for outer in Fields::new(header) {
            let Value::Len(b) = outer.value else {
                continue;
            };
            if wrapper == 0 {
                if outer.number == number {
                    found = Some(as_str(b));
                }
            } else if outer.number == wrapper
                && let Some(s) = last_len(b, number)
            {
                found = Some(as_str(s));
            }
        }
    }
    found
}

/// One `ResourceSpans` of a request: its resource and schema URL.
#[derive(Clone, Copy)]
pub struct ResourceView<'a> {
    pub(crate) buf: &'a [u8],
    pub(crate) index: &'a Index,
    pub(crate) r: usize,
}

impl<'a> ResourceView<'a> {
    /// Position of the `ResourceSpans` in its request.
    pub fn index(&self) -> usize {
        self.r
    }

    fn ranges(&self) -> &'a [[u32; 2]] {
        self.index.resources.get(self.r).map_or(&[][..], |e| {
            header_ranges(&self.index.resource_extras, e.extras)
        })
    }

    /// The resource's attributes, in wire order.
    pub fn attributes(&self) -> Attributes<'a> {
        Attributes::nested(self.buf, self.ranges(), 1, 1)
    }

    /// The value of the first resource attribute named `key`.
    pub fn attribute(&self, key: &str) -> Option<AnyValueView<'a>> {
        self.attributes().value_of(key)
    }

    /// The `service.name` attribute, if it is a string.
    pub fn service_name(&self) -> Option<&'a str> {
        match self.attribute("service.name") {
            Some(AnyValueView::String(s)) => Some(s),
            _ => None,
        }
    }

    /// The `ResourceSpans.schema_url`.
    pub fn schema_url(&self) -> &'a str {
        last_nested_str(self.buf, self.ranges(), 0, 3).unwrap_or("")
    }

    /// Number of spans under this resource.
    pub fn span_count(&self) -> usize {
        let Some(e) = self.index.resources.get(self.r) else {
            return 0;
        };
        let scopes = self
            .index
            .scopes
            .get(e.scopes[0] as usize..e.scopes[1] as usize)
            .unwrap_or(&[]);
        scopes
            .iter()
            .map(|s| (s.spans[1] - s.spans[0]) as usize)
            .sum()
    }
}

impl fmt::Debug for ResourceView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResourceView")
            .field("index", &self.r)
            .field("service_name", &self.service_name())
            .finish_non_exhaustive()
    }
}

/// One `ScopeSpans` of a request: its instrumentation scope and schema URL.
#[derive(Clone, Copy)]
pub struct ScopeView<'a> {
    pub(crate) buf: &'a [u8],
    pub(crate) index: &'a Index,
    pub(crate) s: usize,
}

impl<'a> ScopeView<'a> {
    /// Position of the `ScopeSpans` in its request.
    pub fn index(&self) -> usize {
        self.s
    }

    fn ranges(&self) -> &'a [[u32; 2]] {
        self.index.scopes.get(self.s).map_or(&[][..], |e| {
            header_ranges(&self.index.scope_extras, e.extras)
        })
    }

    /// The instrumentation scope's name.
    pub fn name(&self) -> &'a str {
        last_nested_str(self.buf, self.ranges(), 1, 1).unwrap_or("")
    }

    /// The instrumentation scope's version.
    pub fn version(&self) -> &'a str {
        last_nested_str(self.buf, self.ranges(), 1, 2).unwrap_or("")
    }

    /// The `ScopeSpans.schema_url`.
    pub fn schema_url(&self) -> &'a str {
        last_nested_str(self.buf, self.ranges(), 0, 3).unwrap_or("")
    }

    /// The instrumentation scope's attributes.
    pub fn attributes(&self) -> Attributes<'a> {
        Attributes::nested(self.buf, self.ranges(), 1, 3)
    }
}

impl fmt::Debug for ScopeView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScopeView")
            .field("index", &self.s)
            .field("name", &self.name())
            .field("version", &self.version())
            .finish_non_exhaustive()
    }
}
