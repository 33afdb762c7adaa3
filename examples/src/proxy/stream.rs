//! The upstream's response, streamed back frame by frame with exact stream counters.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Response};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use rotation_policy::{AccountId, Outcome};

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
    let upstream: http::Response<reqwest::Body> = response.into();
    shared.lock().counters.streams_open += 1;
    let body = CountedBody {
        inner: upstream.into_body(),
        shared: shared.clone(),
        failed: false,
        account,
        family: family.to_owned(),
    };
    let mut out = Response::new(BodyExt::boxed_unsync(body));
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    out
}

/// Streams the upstream body frame by frame (no buffering) and keeps `streams_open` and
/// `stream_errors` exact, including when the client goes away mid-stream. An upstream
/// stream that breaks is also reported to the policy as a network error of its account.
struct CountedBody {
    inner: reqwest::Body,
    shared: Arc<Shared>,
    failed: bool,
    account: AccountId,
    family: String,
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
}

impl Body for CountedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Err(err))) => {
                if !self.failed {
                    self.broke();
                }
                Poll::Ready(Some(Err(Box::new(err))))
            }
            other => other.map(|o| o.map(|r| r.map_err(|e| Box::new(e) as BoxError))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for CountedBody {
    fn drop(&mut self) {
        self.shared.lock().counters.streams_open -= 1;
    }
}
