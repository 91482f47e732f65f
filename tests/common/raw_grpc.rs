//! A gRPC client that sends whatever bytes it is given: frames of any
//! length and content, or no framing at all, over real HTTP/2. For tests of
//! what a node does with input no well-behaved client sends.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

/// What came back on a raw call.
#[derive(Debug, Default)]
pub struct RawReply {
    /// The HTTP status of the response head (200 for any gRPC answer).
    pub http_status: u16,
    /// The gRPC messages of the response body, unframed.
    pub messages: Vec<Bytes>,
    /// `grpc-status` from the trailers, or from the head of a trailers-only
    /// answer; None if the response never ended within the limit.
    pub grpc_status: Option<i32>,
    pub grpc_message: String,
    /// The response ended (trailers or end of stream) within the limit.
    pub ended: bool,
}

/// One gRPC frame: a compression flag, the length, the body.
pub fn frame(body: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(body.len() + 5);
    b.put_u8(0);
    b.put_u32(body.len() as u32);
    b.put_slice(body);
    b.freeze()
}

/// Sends `chunks` as the request body of `path` (such as
/// `/drover.v1.ProducerService/EnqueueStream`) on `addr` (host:port), then
/// half-closes, and reads the answer for at most `limit` or `max_messages`
/// messages, whichever comes first.
pub async fn call(
    addr: &str,
    path: &str,
    chunks: Vec<Bytes>,
    limit: Duration,
    max_messages: usize,
) -> RawReply {
    call_with_headers(addr, path, &[], chunks, limit, max_messages).await
}

/// [`call`] with extra request headers (metadata), such as `authorization`.
pub async fn call_with_headers(
    addr: &str,
    path: &str,
    headers: &[(&str, &str)],
    chunks: Vec<Bytes>,
    limit: Duration,
    max_messages: usize,
) -> RawReply {
    let addr = addr.trim_start_matches("http://").to_string();
    let work = async {
        let tcp = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        let (client, conn) = h2::client::Builder::new()
            .initial_window_size(16 << 20)
            .handshake::<_, Bytes>(tcp)
            .await
            .expect("h2 handshake");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut client = client.ready().await.expect("h2 ready");
        let mut request = http::Request::builder();
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .method("POST")
            .uri(format!("http://{addr}{path}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .expect("request");
        let (response, mut body) = client.send_request(request, false).expect("send");
        let sender = tokio::spawn(async move {
            for chunk in chunks {
                // Flow control: wait for window before each piece.
                let mut rest = chunk;
                while !rest.is_empty() {
                    body.reserve_capacity(rest.len());
                    let cap = match std::future::poll_fn(|cx| body.poll_capacity(cx)).await {
                        Some(Ok(c)) => c,
                        _ => return,
                    };
                    let piece = rest.split_to(cap.min(rest.len()));
                    if body.send_data(piece, false).is_err() {
                        return;
                    }
                }
            }
            let _ = body.send_data(Bytes::new(), true);
        });
        let mut reply = RawReply::default();
        let Ok(response) = response.await else {
            return reply;
        };
        reply.http_status = response.status().as_u16();
        let header = |h: &http::HeaderMap, reply: &mut RawReply| {
            if let Some(s) = h.get("grpc-status") {
                reply.grpc_status = s.to_str().ok().and_then(|s| s.parse().ok());
                reply.grpc_message = h
                    .get("grpc-message")
                    .and_then(|m| m.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
            }
        };
        header(response.headers(), &mut reply);
        let mut recv = response.into_body();
        let mut buf = BytesMut::new();
        while let Some(data) = recv.data().await {
            let Ok(data) = data else { break };
            let _ = recv.flow_control().release_capacity(data.len());
            buf.extend_from_slice(&data);
            while buf.len() >= 5 {
                let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
                if buf.len() < 5 + len {
                    break;
                }
                let msg = buf.split_to(5 + len).freeze().slice(5..);
                reply.messages.push(msg);
            }
            if reply.messages.len() >= max_messages {
                sender.abort();
                return reply;
            }
        }
        if let Ok(Some(trailers)) = recv.trailers().await {
            header(&trailers, &mut reply);
        }
        reply.ended = true;
        sender.abort();
        reply
    };
    tokio::time::timeout(limit, work).await.unwrap_or_default()
}
