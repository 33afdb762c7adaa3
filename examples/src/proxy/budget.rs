//! The proxy's global budget for request bodies held in memory, and the capped body reader
//! that draws on it.
//!
//! The per-request cap ([`ProxyOptions::body_limit`](super::ProxyOptions)) bounds one body;
//! it does not bound sixteen of them arriving at once. Every request body the proxy buffers
//! is therefore also drawn from one shared budget
//! ([`ProxyOptions::body_budget`](super::ProxyOptions)):
//!
//! | situation | answer |
//! |---|---|
//! | `Content-Length` over the cap (the smaller of `body_limit` and `body_budget`) | `413`, before any body byte is read |
//! | `Content-Length` within the cap but more than the budget has left | `503` + `Retry-After`, before any body byte is read |
//! | a body without length (chunked) that grows past the cap | `413` when it does |
//! | a body that grows past what the budget has left | `503` + `Retry-After` when it does |
//! | no body byte for `body_idle_timeout` | `408` |
//!
//! Bytes are reserved as they arrive, before the buffer that holds them grows (never more
//! than the declared length): a declared length is only compared with what the budget has
//! left, never reserved up front, so a client that declares the whole budget and then sends
//! nothing holds nothing (and is cut off after the idle timeout). Reservations are released
//! when the memory is: the [`BodyReservation`] becomes the owner of the body's [`Bytes`]
//! (`Bytes::from_owner`), so it is dropped with the last clone or slice of the body — not
//! when the handler returns. That matters because the HTTP client keeps its clone while the
//! upload is still running: a client that hangs up, or an upstream that answers before
//! reading the body, must not free budget for memory that is still in use.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Body;

/// Bytes of request bodies the proxy may hold at once, shared by all requests.
#[derive(Debug)]
pub(crate) struct BodyBudget {
    capacity: usize,
    used: AtomicUsize,
}

impl BodyBudget {
    pub(crate) fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            capacity,
            used: AtomicUsize::new(0),
        })
    }

    /// The configured budget in bytes.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes reserved right now.
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// Takes `bytes` from the budget, or `None` when that would exceed it.
    pub(crate) fn try_reserve(self: &Arc<Self>, bytes: usize) -> Option<BodyReservation> {
        self.take(bytes).then(|| BodyReservation {
            budget: self.clone(),
            bytes,
        })
    }

    fn take(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes)
                    .filter(|total| *total <= self.capacity)
            })
            .is_ok()
    }
}

/// Bytes held from a [`BodyBudget`]; given back on drop (also when the request is cancelled).
#[derive(Debug)]
pub(crate) struct BodyReservation {
    budget: Arc<BodyBudget>,
    bytes: usize,
}

impl BodyReservation {
    /// Grows the reservation to `total` bytes; `false` (and unchanged) when the budget has
    /// not that much left.
    pub(crate) fn grow_to(&mut self, total: usize) -> bool {
        if total <= self.bytes {
            return true;
        }
        if self.budget.take(total - self.bytes) {
            self.bytes = total;
            true
        } else {
            false
        }
    }
}

impl Drop for BodyReservation {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// Why a request body was not read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BodyRefusal {
    /// Over the per-request cap: `413`.
    TooLarge,
    /// The global budget has not enough left right now: `503` + `Retry-After`.
    Busy,
    /// The body could not be read (client error or disconnect): `400`.
    Unreadable,
    /// No body byte arrived for the idle timeout: `408`.
    TimedOut,
}

/// The bytes of one body and the budget they were drawn from: the owner behind the [`Bytes`]
/// that [`read_body`] returns, dropped (and the budget given back) with its last clone.
struct HeldBody {
    bytes: Bytes,
    _reservation: BodyReservation,
}

impl AsRef<[u8]> for HeldBody {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// Reads `body` into one contiguous buffer, reserving its bytes from `budget` before they
/// are allocated. `declared` is the request's `Content-Length`, if any; `limit` the
/// per-request cap. The reservation is held until the returned [`Bytes`] and every clone
/// of it are dropped.
pub(crate) async fn read_body<B>(
    body: B,
    declared: Option<u64>,
    limit: usize,
    budget: &Arc<BodyBudget>,
    idle_timeout: std::time::Duration,
) -> Result<Bytes, BodyRefusal>
where
    B: Body<Data = Bytes>,
{
    let mut cap = limit.min(budget.capacity());
    let mut exact = false;
    if let Some(len) = declared {
        let len = usize::try_from(len)
            .ok()
            .filter(|len| *len <= cap)
            .ok_or(BodyRefusal::TooLarge)?;
        // Refused up front when it cannot fit now, but not reserved: bytes are reserved as
        // they arrive, and never more than declared.
        if len > budget.capacity().saturating_sub(budget.used()) {
            return Err(BodyRefusal::Busy);
        }
        cap = len;
        exact = true;
    }
    let mut reservation = budget.try_reserve(0).ok_or(BodyRefusal::Busy)?;
    // A declared length gets its buffer at once (no copies while growing). Its pages only
    // become resident as bytes are written into them, which is what the reservation counts.
    let mut buf = BytesMut::with_capacity(if exact { cap } else { 0 });
    let mut body = std::pin::pin!(body);
    loop {
        let frame = match tokio::time::timeout(idle_timeout, body.frame()).await {
            Err(_) => return Err(BodyRefusal::TimedOut),
            Ok(None) => break,
            Ok(Some(frame)) => frame,
        };
        let Ok(frame) = frame else {
            return Err(BodyRefusal::Unreadable);
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers carry nothing the proxy forwards
        };
        let needed = buf
            .len()
            .checked_add(data.len())
            .filter(|n| *n <= cap)
            .ok_or(BodyRefusal::TooLarge)?;
        if exact {
            if !reservation.grow_to(needed) {
                return Err(BodyRefusal::Busy);
            }
        } else if needed > buf.capacity() {
            // Grow geometrically (few copies), but never past the cap, and reserve the new
            // capacity before allocating it.
            let want = needed
                .max(buf.capacity().saturating_mul(2))
                .max(64 * 1024)
                .min(cap);
            if !reservation.grow_to(want) {
                return Err(BodyRefusal::Busy);
            }
            buf.reserve(want - buf.len());
        }
        buf.extend_from_slice(&data);
    }
    Ok(Bytes::from_owner(HeldBody {
        bytes: buf.freeze(),
        _reservation: reservation,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: std::time::Duration = std::time::Duration::from_secs(30);
    use http_body_util::Full;
    use hyper::body::Frame;
    use proptest::prelude::*;

    /// A body delivering `chunks` one frame each (what a chunked upload looks like).
    struct Chunks(std::collections::VecDeque<Vec<u8>>);

    impl Body for Chunks {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            std::task::Poll::Ready(self.0.pop_front().map(|c| Ok(Frame::data(Bytes::from(c)))))
        }
    }

    fn chunked(chunks: Vec<Vec<u8>>) -> Chunks {
        Chunks(chunks.into())
    }

    #[test]
    fn reservations_add_up_and_are_given_back_on_drop() {
        let budget = BodyBudget::new(100);
        let a = budget.try_reserve(60).unwrap();
        assert!(budget.try_reserve(41).is_none());
        let mut b = budget.try_reserve(40).unwrap();
        assert_eq!(budget.used(), 100);
        assert!(!b.grow_to(41), "over the budget");
        assert!(
            b.grow_to(40) && b.grow_to(10),
            "shrinking requests are no-ops"
        );
        drop(a);
        assert_eq!(budget.used(), 40);
        assert!(b.grow_to(100));
        assert_eq!(budget.used(), 100);
        drop(b);
        assert_eq!(budget.used(), 0);
        assert!(budget.try_reserve(usize::MAX).is_none(), "no overflow");
    }

    #[tokio::test]
    async fn declared_lengths_are_refused_up_front() {
        let budget = BodyBudget::new(1000);
        let body = || Full::new(Bytes::from_static(b"abc"));
        assert_eq!(
            read_body(body(), Some(2000), 5000, &budget, IDLE)
                .await
                .unwrap_err(),
            BodyRefusal::TooLarge,
            "over the budget's size is over the cap"
        );
        assert_eq!(
            read_body(body(), Some(501), 500, &budget, IDLE)
                .await
                .unwrap_err(),
            BodyRefusal::TooLarge
        );
        assert_eq!(
            read_body(body(), Some(u64::MAX), 500, &budget, IDLE)
                .await
                .unwrap_err(),
            BodyRefusal::TooLarge
        );
        let held = budget.try_reserve(900).unwrap();
        assert_eq!(
            read_body(body(), Some(101), 500, &budget, IDLE)
                .await
                .unwrap_err(),
            BodyRefusal::Busy
        );
        let bytes = read_body(body(), Some(3), 500, &budget, IDLE)
            .await
            .unwrap();
        assert_eq!(&bytes[..], b"abc");
        assert_eq!(budget.used(), 903);
        // Every clone and slice keeps the bytes counted: the HTTP client holds one while it
        // uploads, after the handler is gone.
        let upload = bytes.slice(1..);
        drop((held, bytes));
        assert_eq!(budget.used(), 3, "a live slice keeps its reservation");
        drop(upload);
        assert_eq!(budget.used(), 0);
    }

    #[tokio::test]
    async fn streamed_bodies_are_cut_at_the_cap_or_the_budget() {
        let budget = BodyBudget::new(256 * 1024);
        let big = vec![vec![7u8; 50_000]; 6]; // 300,000 bytes
        assert_eq!(
            read_body(chunked(big.clone()), None, 200_000, &budget, IDLE)
                .await
                .unwrap_err(),
            BodyRefusal::TooLarge
        );
        assert_eq!(budget.used(), 0, "a refused body gives its bytes back");
        let _held = budget.try_reserve(100_000).unwrap();
        assert_eq!(
            read_body(chunked(big), None, 1 << 20, &budget, IDLE)
                .await
                .unwrap_err(),
            BodyRefusal::Busy
        );
        assert_eq!(budget.used(), 100_000);
        let bytes = read_body(
            chunked(vec![vec![1; 10], vec![2; 20]]),
            None,
            100,
            &budget,
            IDLE,
        )
        .await
        .unwrap();
        assert_eq!(bytes.len(), 30);
        assert!(budget.used() > 100_000 && budget.used() <= 256 * 1024);
        drop(bytes);
        assert_eq!(budget.used(), 100_000);
    }

    /// A body that delivers `first` and then nothing, ever.
    struct Stalls(Option<Vec<u8>>);

    impl Body for Stalls {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            match self.0.take() {
                Some(first) => std::task::Poll::Ready(Some(Ok(Frame::data(Bytes::from(first))))),
                None => std::task::Poll::Pending,
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_declared_length_is_not_reserved_before_its_bytes_arrive_and_a_stall_times_out() {
        let budget = BodyBudget::new(1 << 20);
        let reader = {
            let budget = budget.clone();
            tokio::spawn(async move {
                read_body(
                    Stalls(Some(vec![7; 10])),
                    Some(1 << 20),
                    1 << 20,
                    &budget,
                    IDLE,
                )
                .await
            })
        };
        // Let the reader take the first frame and wait for the next.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        let held = budget.used();
        assert_eq!(
            held, 10,
            "a client that declared the whole budget and sent 10 bytes holds {held}"
        );
        assert!(
            budget.try_reserve((1 << 20) - 10).is_some(),
            "the rest of the budget is free for others"
        );
        tokio::time::advance(IDLE + std::time::Duration::from_secs(1)).await;
        assert_eq!(reader.await.unwrap().unwrap_err(), BodyRefusal::TimedOut);
        assert_eq!(budget.used(), 0, "a timed-out body gives its bytes back");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Whatever the chunking, a body is read whole within cap and budget or refused, the
        /// budget never goes over, and everything is given back at the end.
        #[test]
        fn reads_whole_or_refuses_and_never_overdraws(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..5000), 0..20),
            limit in 0usize..60_000,
            capacity in 0usize..120_000,
            held in 0usize..120_000,
        ) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap();
            let budget = BodyBudget::new(capacity);
            let held = budget.try_reserve(held);
            let total: usize = chunks.iter().map(Vec::len).sum();
            let expected: Vec<u8> = chunks.concat();
            let result = rt.block_on(read_body(chunked(chunks), None, limit, &budget, IDLE));
            prop_assert!(budget.used() <= capacity);
            match result {
                Ok(bytes) => {
                    prop_assert_eq!(&bytes[..], &expected[..]);
                    prop_assert!(total <= limit.min(capacity));
                    prop_assert!(budget.used() <= capacity);
                }
                Err(BodyRefusal::TooLarge) => prop_assert!(total > limit.min(capacity)),
                Err(BodyRefusal::Busy) => prop_assert!(total > 0),
                Err(BodyRefusal::Unreadable) => prop_assert!(false, "infallible body"),
                Err(BodyRefusal::TimedOut) => prop_assert!(false, "the body never stalls"),
            }
            drop(held);
            prop_assert_eq!(budget.used(), 0);
        }
    }
}
