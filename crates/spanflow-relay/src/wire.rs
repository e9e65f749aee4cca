//! The wire model the receivers use: `spanflow_otlp`'s [`TraceRequest`] (protobuf bytes plus an
//! index), and the receiver-side checks on it.

pub use spanflow_otlp::{DecodeError, TraceRequest};

pub use spanflow_otlp::JsonError;
/// OTLP/JSON bodies (`from_json` for the HTTP receiver, `to_json` for tools).
pub use spanflow_otlp::json;

/// Removes spans whose trace id or span id is invalid (absent, the wrong length or all zero,
/// which the OTLP spec calls invalid), returning the rest, how many were removed and a message
/// for `partial_success`. Valid requests pass through untouched, without a copy or an
/// allocation.
pub(crate) fn drop_invalid_spans(request: TraceRequest) -> (TraceRequest, usize, String) {
    let valid = |s: &spanflow_otlp::SpanView<'_>| {
        ids_valid(s.raw()).unwrap_or_else(|| s.trace_id() != [0; 16] && s.span_id() != [0; 8])
    };
    if request.spans().all(|s| valid(&s)) {
        return (request, 0, String::new());
    }
    let keep: Vec<bool> = request.spans().map(|s| valid(&s)).collect();
    let rejected = keep.iter().filter(|k| !**k).count();
    let message = format!(
        "{rejected} span(s) with an invalid trace_id or span_id (must be 16 and 8 bytes, not all zero)"
    );
    (request.select(&keep), rejected, message)
}

/// Whether a span's protobuf body has a valid trace id and span id, read in one pass over its
/// fields: the last length-delimited field 1 must be 16 bytes and field 2 8 bytes, neither all
/// zero (what `SpanView::trace_id` and `span_id` read, which take a pass each). `None` when
/// the body holds something this short reader does not walk (group wire types); the caller
/// then asks the view.
fn ids_valid(body: &[u8]) -> Option<bool> {
    let mut trace: Option<&[u8]> = None;
    let mut span: Option<&[u8]> = None;
    let mut pos = 0;
    while pos < body.len() {
        let key = varint(body, &mut pos)?;
        match key & 7 {
            0 => {
                varint(body, &mut pos)?;
            }
            1 => pos = pos.checked_add(8)?,
            2 => {
                let len = usize::try_from(varint(body, &mut pos)?).ok()?;
                let end = pos.checked_add(len)?;
                let value = body.get(pos..end)?;
                match key >> 3 {
                    1 => trace = Some(value),
                    2 => span = Some(value),
                    _ => {}
                }
                pos = end;
            }
            5 => pos = pos.checked_add(4)?,
            _ => return None,
        }
    }
    if pos != body.len() {
        return None;
    }
    let id =
        |v: Option<&[u8]>, n: usize| v.is_some_and(|v| v.len() == n && v.iter().any(|b| *b != 0));
    Some(id(trace, 16) && id(span, 8))
}

/// Reads a base-128 varint at `*pos`, advancing it; `None` past the end or beyond 10 bytes.
fn varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..70).step_by(7) {
        let byte = *buf.get(*pos)?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

    #[test]
    fn invalid_ids_are_dropped_and_counted() {
        let mut rng = rand::rng();
        let [mut a, _, _] = crate::traffic::demo_traces(&mut rng, 2);
        let spans = &mut a.resource_spans[0].scope_spans[0].spans;
        spans[0].trace_id = vec![0; 16];
        spans[3].span_id = vec![1, 2, 3];
        let request = TraceRequest::from_proto(&a);
        let (kept, rejected, message) = drop_invalid_spans(request);
        assert_eq!((kept.span_count(), rejected), (2, 2));
        assert!(message.contains("2 span(s)"));
        let valid = TraceRequest::from_proto(&ExportTraceServiceRequest::default());
        assert_eq!(drop_invalid_spans(valid).1, 0);
    }

    #[test]
    fn the_one_pass_id_check_agrees_with_the_views() {
        let mut rng = rand::rng();
        let [mut a, _, _] = crate::traffic::demo_traces(&mut rng, 4);
        let spans = &mut a.resource_spans[0].scope_spans[0].spans;
        spans[0].trace_id = vec![0; 16];
        spans[1].span_id = vec![1, 2, 3];
        spans[2].trace_id.clear();
        spans[3].span_id = vec![0; 8];
        spans[4].trace_id = vec![7; 17];
        let request = TraceRequest::from_proto(&a);
        for s in request.spans() {
            let slow = s.trace_id() != [0; 16] && s.span_id() != [0; 8];
            assert_eq!(ids_valid(s.raw()), Some(slow), "span {}", s.index());
        }
        let (_, rejected, _) = drop_invalid_spans(request);
        assert_eq!(rejected, 5);
    }

    #[test]
    fn the_last_id_field_wins_and_odd_bodies_fall_back() {
        let field = |n: u8, v: &[u8]| {
            let mut f = vec![(n << 3) | 2, v.len() as u8];
            f.extend_from_slice(v);
            f
        };
        let good = [field(1, &[1; 16]), field(2, &[2; 8])].concat();
        assert_eq!(ids_valid(&good), Some(true));
        let zero_last = [good.clone(), field(1, &[0; 16])].concat();
        assert_eq!(ids_valid(&zero_last), Some(false));
        let fixed_last = [field(1, &[0; 16]), good.clone()].concat();
        assert_eq!(ids_valid(&fixed_last), Some(true));
        // A varint field 1 is not an id: the length-delimited one before it still counts.
        let varint_one = [good.clone(), vec![1 << 3, 5]].concat();
        assert_eq!(ids_valid(&varint_one), Some(true));
        // Other wire types are skipped; a group or a truncated body is left to the views.
        let fixed = [
            good.clone(),
            vec![(7 << 3) | 1],
            vec![0; 8],
            vec![(8 << 3) | 5],
            vec![0; 4],
        ];
        assert_eq!(ids_valid(&fixed.concat()), Some(true));
        assert_eq!(
            ids_valid(&[good.clone(), vec![(9 << 3) | 3]].concat()),
            None
        );
        assert_eq!(ids_valid(&good[..good.len() - 1]), None);
        assert_eq!(ids_valid(&[]), Some(false));
    }
}
