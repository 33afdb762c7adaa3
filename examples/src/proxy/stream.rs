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

use super::continuation::{Owner, ResponseIds, TURN_STATE, turn_state_key};
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
    if let Some(state) = headers.get(TURN_STATE) {
        // The next requests of this turn carry it back: they belong to this account.
        let key = turn_state_key(state.as_bytes());
        shared
            .creators()
            .learn(&key, Owner::Account(account.clone()));
    }
    let tap = is_event_stream(&headers).then(|| {
        // Events may be rewritten, so the length may change.
        headers.remove(header::CONTENT_LENGTH);
        SseTap::new((
            StreamUsage::new(shared.clone(), account.clone()),
            ResponseIds::new(shared.clone(), Owner::Account(account.clone())),
        ))
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
    tap: Option<SseTap<(StreamUsage, ResponseIds)>>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use rotation_policy::usage::UsageReport;
    use rotation_policy::{PolicyConfig, Pool};

    /// An hour from now, in Unix seconds: within the reported 5-hour window.
    fn reset_at() -> u64 {
        now().as_millis() / 1000 + 3600
    }

    fn event(reset_at: u64) -> String {
        format!(
            r#"{{"type":"codex.rate_limits","rate_limits":{{"primary":{{"used_percent":97.5,"window_minutes":300,"reset_at":{reset_at}}}}}}}"#
        )
    }

    /// An upstream answer of `account` reporting 97.5 % in headers and in the stream.
    fn upstream_answer(chunks: Vec<String>, reset_at: u64) -> reqwest::Response {
        let (mut tx, body) = http_body_util::channel::Channel::<Bytes, BoxError>::new(16);
        for chunk in chunks {
            tx.try_send(Frame::data(Bytes::from(chunk)))
                .unwrap_or_else(|_| panic!("channel full"));
        }
        drop(tx);
        let mut answer = http::Response::new(reqwest::Body::wrap(body));
        let h = answer.headers_mut();
        h.insert(header::CONTENT_TYPE, "text/event-stream".parse().unwrap());
        h.insert(header::CONTENT_LENGTH, "999".parse().unwrap());
        h.insert("x-codex-primary-used-percent", "97.5".parse().unwrap());
        h.insert(
            "x-codex-primary-reset-at",
            reset_at.to_string().parse().unwrap(),
        );
        h.insert("x-codex-promo-message", "account-specific".parse().unwrap());
        h.insert("x-request-id", "req-1".parse().unwrap());
        reqwest::Response::from(answer)
    }

    fn usage_headers(headers: &HeaderMap) -> Vec<String> {
        let mut shown: Vec<String> = headers
            .iter()
            .filter(|(k, _)| k.as_str().starts_with("x-codex-"))
            .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap()))
            .collect();
        shown.sort_unstable();
        shown
    }

    /// The account's usage never reaches the client: with nothing known to the pool when
    /// the answer starts, it carries no usage headers; the event is recorded for the account
    /// on the way and replaced by the pool's usage (the one account, at 97.5 %, over a 95 %
    /// threshold, counts as 100 %); everything else passes byte for byte.
    #[tokio::test]
    async fn the_client_gets_the_pools_usage_and_the_account_its_report_recorded() {
        let id = AccountId::new("a").unwrap();
        let mut config = PolicyConfig::default();
        config.usage_threshold = 95;
        let mut pool = Pool::new(config, 1).unwrap();
        pool.add(id.clone()).unwrap();
        let shared = Arc::new(Shared::for_tests(pool));
        let reset = reset_at();
        let event_line = format!("data: {}\n", event(reset));
        let (head, tail) = event_line.split_at(20);
        let chunks = vec![
            "event: response.created\ndata: {\"type\":\"response.created\"}\n\nevent: codex.rate_limits\n".to_owned(),
            head.to_owned(),
            tail.to_owned(),
            "\nevent: response.completed\ndata: {\"type\":\"response.completed\"}\n\n".to_owned(),
        ];
        let answer = stream_back(&shared, upstream_answer(chunks, reset), id.clone(), "gpt-5");
        assert!(
            usage_headers(answer.headers()).is_empty(),
            "{:?}",
            answer.headers()
        );
        assert_eq!(answer.headers()["x-request-id"], "req-1");
        assert!(answer.headers().get(header::CONTENT_LENGTH).is_none());
        let body = answer.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            "event: response.created\ndata: {\"type\":\"response.created\"}\n\n\
             event: codex.rate_limits\ndata: {\"type\":\"codex.rate_limits\",\"rate_limits\":{\"primary\":{\"used_percent\":100.0,\"window_minutes\":300,\"reset_at\":RESET}}}\n\n\
             event: response.completed\ndata: {\"type\":\"response.completed\"}\n\n"
                .replace("RESET", &reset.to_string())
        );
        // The account's report was recorded: it is over the threshold until its reset.
        let mut state = shared.lock();
        let status = state.policy.account_status(&id, now()).unwrap();
        assert_eq!(status.usage.len(), 1);
        assert!(status.usage[0].blocked_until.is_some());
        assert_eq!(state.counters.streams_open, 0);
        // Answers get the pool's usage in headers too.
        state.usage = super::super::usage::UsageCache::default();
        let pool = state.client_usage(now());
        assert_eq!(pool.report(), &state.policy.pool_usage(now()));
        drop(state);
        let answer = stream_back(&shared, upstream_answer(vec![], reset), id, "gpt-5");
        assert_eq!(
            usage_headers(answer.headers()),
            [
                format!("x-codex-primary-reset-at: {reset}").as_str(),
                "x-codex-primary-used-percent: 100",
                "x-codex-primary-window-minutes: 300"
            ]
        );
        assert_eq!(
            UsageReport::from_headers(answer.headers()),
            shared.lock().policy.pool_usage(now())
        );
    }
}
