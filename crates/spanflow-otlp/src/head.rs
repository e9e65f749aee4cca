//! [`SpanHead`]: the fields keep/drop rules read, in one pass over a span.

use crate::request::SpanFields;
use crate::view::{SpanView, id, merge_status_code};
use crate::wire::Value;

/// The scalar fields of a span that keep/drop rules usually need, read in one pass over
/// the span's bytes ([`SpanView::head`]).
///
/// Each [`SpanView`] accessor walks the span's fields on its own (protobuf's last-one-wins
/// rule means a field may appear again later); a processor chain reads the head once per
/// span and hands it to every rule, so a filter and a sampler together walk the span once
/// instead of four or five times. Values are exactly what the `SpanView` accessors return.
///
/// ```
/// let spans = spanflow_otlp::testing::span_batch(2, 4);
/// let request =
///     spanflow_otlp::Encoder::new().encode(&spans, &spanflow_otlp::testing::resource());
/// let span = request.span(0).unwrap();
/// let head = span.head();
/// assert_eq!(head.name, span.name());
/// assert_eq!(head.trace_id, span.trace_id());
/// assert_eq!(head.duration_nanos(), span.end_time_unix_nano() - span.start_time_unix_nano());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanHead<'a> {
    /// As [`SpanView::trace_id`].
    pub trace_id: [u8; 16],
    /// As [`SpanView::name`].
    pub name: &'a str,
    /// As [`SpanView::kind`].
    pub kind: i32,
    /// As [`SpanView::start_time_unix_nano`].
    pub start_time_unix_nano: u64,
    /// As [`SpanView::end_time_unix_nano`].
    pub end_time_unix_nano: u64,
    /// As [`SpanView::status_code`].
    pub status_code: i32,
}

impl<'a> SpanHead<'a> {
    /// Reads the head of `span`; the same as [`span.head()`](SpanView::head).
    pub fn read(span: &SpanView<'a>) -> SpanHead<'a> {
        span.head()
    }

    /// `end - start`, or 0 when the end precedes the start.
    pub fn duration_nanos(&self) -> u64 {
        self.end_time_unix_nano
            .saturating_sub(self.start_time_unix_nano)
    }
}

impl<'a> SpanView<'a> {
    /// The span's [`SpanHead`], in one pass over its fields.
    pub fn head(&self) -> SpanHead<'a> {
        let mut trace_id = None;
        let (mut kind, mut start, mut end) = (0, 0, 0);
        let mut status_code = 0;
        // Like every accessor, stops at the first field that does not read.
        for field in SpanFields::new(self.raw()) {
            // Scalars of any numeric wire type count, as in `SpanView::last_varint`.
            let scalar = match field.value {
                Value::Varint(v) | Value::I64(v) => v,
                Value::I32(v) => u64::from(v),
                Value::Len(bytes) => {
                    match field.number {
                        1 => trace_id = Some(bytes),
                        15 => status_code = merge_status_code(bytes, status_code),
                        _ => {}
                    }
                    continue;
                }
                Value::Group => continue,
            };
            match field.number {
                6 => kind = scalar,
                7 => start = scalar,
                8 => end = scalar,
                _ => {}
            }
        }
        SpanHead {
            trace_id: id(trace_id).unwrap_or([0; 16]),
            name: self.name(),
            kind: kind as i32,
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            status_code,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::request::Index;
    use crate::testing::head_from_accessors;
    use crate::view::SpanView;

    /// A view over `body` as it stands, without parsing it first.
    fn unchecked<'a>(body: &'a [u8], index: &'a Index) -> SpanView<'a> {
        SpanView {
            buf: body,
            index,
            i: 0,
            body,
            meta: Default::default(),
        }
    }

    fn agrees(body: &[u8]) {
        let index = Index::default();
        let span = unchecked(body, &index);
        assert_eq!(span.head(), head_from_accessors(&span), "{body:?}");
    }

    #[test]
    fn scalars_of_any_numeric_wire_type_count_like_the_accessors() {
        agrees(&[0x30, 0x02, 0x31, 3, 0, 0, 0, 0, 0, 0, 0]); // kind as varint, then fixed64
        agrees(&[0x35, 4, 0, 0, 0, 0x38, 0x96, 0x01]); // kind fixed32, start varint
        agrees(&[0x41, 1, 0, 0, 0, 0, 0, 0, 0, 0x45, 9, 0, 0, 0]); // end fixed64, fixed32
        agrees(&[0x7a, 0x02, 0x18, 0x02, 0x7a, 0x02, 0x10, 0x01]); // two statuses merge
        agrees(&[0x7a, 0x05, 0x1d, 1, 0, 0, 0]); // status code of the wrong wire type
        agrees(&[0x33, 0x30, 0x01, 0x34, 0x30, 0x04]); // a group, then kind
    }

    #[test]
    fn malformed_bytes_stop_where_the_accessors_stop() {
        agrees(&[0x30, 0x02, 0x2a, 0x05, b'a']); // length past the end
        agrees(&[0x30, 0x02, 0x38]); // varint missing
        agrees(&[0x30, 0x02, 0x38, 0xff, 0xff]); // varint unterminated
        agrees(&[0x30, 0x02, 0x00, 0x01, 0x30, 0x03]); // field number 0
        agrees(&[0x30, 0x02, 0x0f, 0x30, 0x03]); // wire type 7
        agrees(&[0x30, 0x02, 0x33, 0x30, 0x01]); // group without end
        agrees(&[0x30, 0x02, 0x85]); // flags tag cut short
        agrees(&[0x0b; 200]); // groups nested too deep
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_and_agree(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..96),
        ) {
            agrees(&bytes);
        }

        #[test]
        fn span_shaped_bytes_agree(
            fields in proptest::collection::vec(
                (proptest::sample::select(vec![
                    0x0a_u8, 0x12, 0x2a, 0x30, 0x31, 0x35, 0x39, 0x41, 0x45, 0x4a, 0x5a, 0x7a,
                    0x85, 0x38, 0x40,
                ]), proptest::collection::vec(proptest::prelude::any::<u8>(), 0..20)),
                0..8,
            ),
        ) {
            let mut body = Vec::new();
            for (tag, rest) in fields {
                body.push(tag);
                if tag & 7 == 2 {
                    body.push(rest.len() as u8);
                }
                body.extend(rest);
            }
            agrees(&body);
        }
    }
}
