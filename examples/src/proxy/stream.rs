//! The upstream's response, streamed back frame by frame with exact stream counters; usage
//! headers and `codex.rate_limits` events are swapped for the pool's on the way (`usage.rs`).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Response, header};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use rotation_policy::{AccountId, Outcome};

use super::sse::SseTap;
use super::usage::{StreamUsage, strip_usage_headers};
use super::{BoxBody, BoxError, Shared, now, strip_hop_by_hop};

pub(super) fn stream_back(
    shared: &Arc<Shared>,
    response: reqwest::Response,
    account: AccountId,
    family: &str,
) -> Response<BoxBody> {
    let status = response.status();
    let mut headers: HeaderMap = response.headers().clone();
    strip_hop_by_hop(&mut headers);
    strip_usage_headers(&mut headers);
    let tap = is_event_stream(&headers).then(|| {
        // Events may be rewritten, so the length may change.
        headers.remove(header::CONTENT_LENGTH);
        SseTap::new(StreamUsage::new(shared.clone(), account.clone()))
    });
    let upstream: http::Response<reqwest::Body> = response.into();
    let usage = {
        let mut state = shared.lock();
        state.counters.streams_open += 1;
        state.client_usage(now())
    };
    usage.write_headers(&mut headers);
    let body = CountedBody {
        inner: upstream.into_body(),
        shared: shared.clone(),
        failed: false,
        account,
        family: family.to_owned(),
        tap,
        trailers: None,
        ended: false,
    };
    let mut out = Response::new(BodyExt::boxed_unsync(body));
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    out
}

fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("text/event-stream"))
        })
}

/// Streams the upstream body frame by frame (no buffering but an event stream's current
/// data line, see `sse.rs`) and keeps `streams_open` and `stream_errors` exact, including
/// when the client goes away mid-stream. An upstream stream that breaks is also reported to
/// the policy as a network error of its account.
struct CountedBody {
    inner: reqwest::Body,
    shared: Arc<Shared>,
    failed: bool,
    account: AccountId,
    family: String,
    /// Reads usage events of an event stream (none for other bodies).
    tap: Option<SseTap<StreamUsage>>,
    /// Trailers that arrived while the tap still held bytes: sent after them.
    trailers: Option<Frame<Bytes>>,
    /// The upstream body has ended (what the tap held may still be due).
    ended: bool,
}

impl CountedBody {
    fn broke(&mut self) {
        self.failed = true;
        let message = format!("the upstream stream broke for {}", self.account);
        let mut state = self.shared.lock();
        state.counters.stream_errors += 1;
        // The client already has its status line: the decision has nobody to act on it.
        let mut request = rotation_policy::Request::new(self.family.clone());
        let _ = state
            .policy
            .report(&mut request, &self.account, Outcome::NetworkError, now());
        state.last_error = Some(message.clone());
        drop(state);
        tracing::warn!(account = %self.account, "upstream stream broke mid-way");
        self.shared.accounts.note_error(&self.account, message);
    }

    /// What the tap still holds, once the upstream has nothing more before it.
    fn held(&mut self) -> Option<Bytes> {
        let rest = self.tap.as_mut()?.finish();
        (!rest.is_empty()).then_some(rest)
    }
}

impl Body for CountedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(trailers) = self.trailers.take() {
            return Poll::Ready(Some(Ok(trailers)));
        }
        if self.ended {
            return Poll::Ready(None);
        }
        // Bounded by the upstream's frames: each round consumes one.
        loop {
            let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(err))) => {
                    if !self.failed {
                        self.broke();
                    }
                    return Poll::Ready(Some(Err(Box::new(err))));
                }
                Poll::Ready(None) => {
                    self.ended = true;
                    return Poll::Ready(self.held().map(|rest| Ok(Frame::data(rest))));
                }
                Poll::Ready(Some(Ok(frame))) => frame,
            };
            let Some(tap) = self.tap.as_mut() else {
                return Poll::Ready(Some(Ok(frame)));
            };
            match frame.into_data() {
                Ok(data) => {
                    let out = tap.feed(data);
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                }
                Err(trailers) => {
                    return Poll::Ready(Some(Ok(match self.held() {
                        Some(rest) => {
                            self.trailers = Some(trailers);
                            Frame::data(rest)
                        }
                        None => trailers,
                    })));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.trailers.is_none()
            && (self.ended
                || (self.inner.is_end_stream() && self.tap.as_ref().is_none_or(SseTap::is_empty)))
    }

    fn size_hint(&self) -> SizeHint {
        match &self.tap {
            // Rewritten events change the length.
            Some(_) => SizeHint::default(),
            None => self.inner.size_hint(),
        }
    }
}

impl Drop for CountedBody {
    fn drop(&mut self) {
        self.shared.lock().counters.streams_open -= 1;
    }
}
