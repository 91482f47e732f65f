//! W3C trace context (`traceparent`), as producers, nodes and workers
//! read it: one parse for all of them.

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry::Context;

/// Whether `s` is a W3C `traceparent` drover keeps: version `00`, a trace
/// id and a parent id in lower-case hex, neither all zeros, and the flags
/// (`00-<32 hex>-<16 hex>-<2 hex>`).
pub fn valid_traceparent(s: &str) -> bool {
    // Version 00 is 55 bytes; most jobs carry none, and cost nothing here.
    if s.len() != 55 {
        return false;
    }
    let parts: Vec<&str> = s.split('-').collect();
    let hex = |p: &str, n: usize| {
        p.len() == n
            && p.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    matches!(parts.as_slice(), [v, t, p, f]
        if *v == "00" && hex(t, 32) && hex(p, 16) && hex(f, 2)
            && t.bytes().any(|b| b != b'0') && p.bytes().any(|b| b != b'0'))
}

/// A context whose remote parent is the span `traceparent` names (None:
/// not a valid one).
pub fn remote_parent(traceparent: &str) -> Option<Context> {
    if !valid_traceparent(traceparent) {
        return None;
    }
    let mut parts = traceparent.split('-').skip(1);
    let trace_id = TraceId::from_hex(parts.next()?).ok()?;
    let span_id = SpanId::from_hex(parts.next()?).ok()?;
    let flags = u8::from_str_radix(parts.next()?, 16).ok()?;
    let cx = SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags),
        true,
        TraceState::default(),
    );
    Some(Context::new().with_remote_span_context(cx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_w3c_traceparents_are_kept() {
        assert!(valid_traceparent(
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        ));
        for bad in [
            "",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
        ] {
            assert!(!valid_traceparent(bad), "{bad:?}");
            assert!(remote_parent(bad).is_none());
        }
        let cx = remote_parent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").unwrap();
        let span = cx.span();
        let sc = span.span_context();
        assert_eq!(
            format!("{:032x}", sc.trace_id()),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert!(sc.is_remote() && sc.is_sampled());
    }
}
