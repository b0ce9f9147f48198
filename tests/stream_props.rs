//! Any split of an SSE byte stream into chunks yields the same events, and the bytes the
//! consumer receives are exactly the upstream's.

mod chunks;

use chunks::Chunks;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use proptest::prelude::*;
use tower::{service_fn, Layer, ServiceExt};
use tower_openrouter::classify::ClassifyLayer;
use tower_openrouter::stream::SseParser;
use tower_openrouter::ErrorKind;

type Ev = (Vec<u8>, Vec<u8>, u64);

fn parse(chunks: &[&[u8]]) -> Vec<Ev> {
    let mut p = SseParser::new();
    let mut out = Vec::new();
    for c in chunks {
        p.feed(c, |e| out.push((e.name.to_vec(), e.data.to_vec(), e.start)));
    }
    p.finish(|e| out.push((e.name.to_vec(), e.data.to_vec(), e.start)));
    out
}

/// Cuts `bytes` at the given points (sorted; a point given twice, or one at either end,
/// makes an empty chunk, as a body may yield).
fn split<'a>(bytes: &'a [u8], points: &[usize]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = points.iter().map(|p| p % (bytes.len() + 1)).collect();
    cuts.sort_unstable();
    let mut out = Vec::new();
    let mut last = 0;
    for c in cuts {
        out.push(&bytes[last..c]);
        last = c;
    }
    out.push(&bytes[last..]);
    out
}

/// SSE-shaped streams: comments, `event:`/`data:`/`id:` fields, unknown fields, blank
/// lines, with LF, CRLF and CR line ends mixed.
fn sse_stream() -> impl Strategy<Value = Vec<u8>> {
    let line = prop_oneof![
        "[ -~]{0,20}".prop_map(|s| format!("data: {s}")),
        "[ -~]{0,20}".prop_map(|s| format!("data:{s}")),
        "[a-z_]{0,12}".prop_map(|s| format!("event: {s}")),
        Just(": OPENROUTER PROCESSING".to_string()),
        Just("id: 7".to_string()),
        Just("data".to_string()),
        Just(String::new()),
        Just("data: [DONE]".to_string()),
    ];
    let end = prop::sample::select(vec!["\n", "\r\n", "\r"]);
    prop::collection::vec((line, end), 0..30).prop_map(|lines| {
        let mut s = String::new();
        for (l, e) in lines {
            s.push_str(&l);
            s.push_str(e);
        }
        s.into_bytes()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_split_yields_the_same_events(stream in sse_stream(), points in prop::collection::vec(any::<usize>(), 0..12)) {
        let whole = parse(&[&stream]);
        let chunks = split(&stream, &points);
        prop_assert_eq!(parse(&chunks), whole.clone());
        // One byte at a time too.
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        prop_assert_eq!(parse(&bytes), whole);
    }

    #[test]
    fn empty_chunks_anywhere_change_nothing(stream in sse_stream(), points in prop::collection::vec(any::<usize>(), 0..12)) {
        let whole = parse(&[&stream]);
        // Every cut doubled: an empty chunk after each one (after a CR, too).
        let doubled: Vec<usize> = points.iter().flat_map(|&p| [p, p]).collect();
        prop_assert_eq!(parse(&split(&stream, &doubled)), whole.clone());
        let mut bytes: Vec<&[u8]> = Vec::new();
        for b in stream.chunks(1) {
            bytes.extend([b, &b""[..]]);
        }
        prop_assert_eq!(parse(&bytes), whole);
    }

    #[test]
    fn any_split_of_arbitrary_bytes_yields_the_same_events(stream in prop::collection::vec(any::<u8>(), 0..300), points in prop::collection::vec(any::<usize>(), 0..12)) {
        prop_assert_eq!(parse(&split(&stream, &points)), parse(&[&stream]));
    }
}

/// Runs `stream`, split at `points`, through the layer: the delivered bytes and the error
/// (the response's or the body's).
fn deliver(stream: &'static [u8], points: &[usize]) -> (Vec<u8>, Option<ErrorKind>) {
    let chunks: Vec<Bytes> = split(stream, points)
        .into_iter()
        .map(Bytes::from_static)
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async move {
        let upstream = service_fn(move |_req: Request<Full<Bytes>>| {
            let body = Chunks::from_bytes(chunks.clone());
            async move {
                Ok::<_, std::io::Error>(
                    Response::builder()
                        .header("content-type", "text/event-stream")
                        .body(body)
                        .unwrap(),
                )
            }
        });
        let resp = match ClassifyLayer::new()
            .layer(upstream)
            .oneshot(Request::new(Full::default()))
            .await
        {
            Ok(r) => r,
            Err(e) => return (Vec::new(), Some(e.kind())),
        };
        let mut body = resp.into_body();
        let mut bytes = Vec::new();
        while let Some(f) = body.frame().await {
            match f {
                Ok(f) => bytes.extend_from_slice(&f.into_data().unwrap()),
                Err(e) => return (bytes, Some(e.kind())),
            }
        }
        (bytes, None)
    })
}

const GOOD: &str = ": OPENROUTER PROCESSING\r\n\r\n\
data: {\"id\":\"g\",\"model\":\"a/b\",\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\r\n\r\n\
: OPENROUTER PROCESSING\n\n\
data: {\"id\":\"g\",\"choices\":[{\"delta\":{\"content\":\"Hello\"}}]}\n\n\
data: {\"id\":\"g\",\"choices\":[{\"delta\":{\"content\":\" there, \\\"error\\\" is just a word\"}}]}\n\n\
data: {\"id\":\"g\",\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":{\"total_tokens\":9}}\n\n\
data: [DONE]\n\n";

const BAD: &str = ": OPENROUTER PROCESSING\n\n\
data: {\"id\":\"g\",\"choices\":[{\"delta\":{\"content\":\"Hello\"}}]}\n\n\
data: {\"id\":\"g\",\"choices\":[{\"delta\":{\"content\":\" you\"}}]}\n\n\
data: {\"id\":\"g\",\"error\":{\"code\":502,\"message\":\"x\"},\"choices\":[{\"delta\":{\"content\":\"\"},\"finish_reason\":\"error\"}]}\n\n\
data: [DONE]\n\n";

/// `BAD` with CR and CRLF line ends, its error event's data on two lines: a cut between
/// the CR and the LF of a line end, with an empty chunk in it, must not make the error
/// event's lines look like two events (two halves of JSON that would pass as content).
const BAD_CR: &str = ": OPENROUTER PROCESSING\r\r\
data: {\"id\":\"g\",\"choices\":[{\"delta\":{\"content\":\"Hello\"}}]}\r\r\
data: {\"id\":\"g\",\r\n\
data: \"error\":{\"code\":502,\"message\":\"x\"},\"choices\":[{\"delta\":{\"content\":\"\"},\"finish_reason\":\"error\"}]}\r\n\r\n\
data: [DONE]\r\n\r\n";

#[test]
fn an_error_event_split_after_a_cr_by_an_empty_chunk_is_still_an_error() {
    // Between the CR and the LF inside the two-line error event, an empty chunk there.
    let cr = BAD_CR.find("\"g\",\r\n").unwrap() + "\"g\",\r".len();
    let (bytes, err) = deliver(BAD_CR.as_bytes(), &[cr, cr]);
    assert_eq!(err, Some(ErrorKind::StreamInterrupted));
    let error_at = BAD_CR.find("data: {\"id\":\"g\",\r").unwrap();
    assert_eq!(&bytes[..], &BAD_CR.as_bytes()[..error_at]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_split_error_event_is_an_error_with_empty_chunks_too(points in prop::collection::vec(any::<usize>(), 0..16)) {
        let doubled: Vec<usize> = points.iter().flat_map(|&p| [p, p]).collect();
        let (bytes, err) = deliver(BAD_CR.as_bytes(), &doubled);
        prop_assert_eq!(err, Some(ErrorKind::StreamInterrupted));
        let error_at = BAD_CR.find("data: {\"id\":\"g\",\r").unwrap();
        prop_assert_eq!(&bytes[..], &BAD_CR.as_bytes()[..error_at]);
    }

    #[test]
    fn the_consumer_gets_exactly_the_upstream_bytes(points in prop::collection::vec(any::<usize>(), 0..16)) {
        let (bytes, err) = deliver(GOOD.as_bytes(), &points);
        prop_assert_eq!(err, None);
        prop_assert_eq!(bytes, GOOD.as_bytes());
    }

    #[test]
    fn a_mid_stream_error_delivers_a_clean_prefix(points in prop::collection::vec(any::<usize>(), 0..16)) {
        let (bytes, err) = deliver(BAD.as_bytes(), &points);
        prop_assert_eq!(err, Some(ErrorKind::StreamInterrupted));
        let error_at = BAD.find("data: {\"id\":\"g\",\"error\"").unwrap();
        // Exactly the bytes before the error event, however the stream was split: an
        // event's bytes go out only once the event is complete.
        prop_assert_eq!(&bytes[..], &BAD.as_bytes()[..error_at]);
    }
}
