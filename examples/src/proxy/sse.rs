//! A tap on a server-sent-event stream (pure): bytes pass through as they arrive, and an
//! observer reads — and may replace — the value of each `data:` line.
//!
//! The proxy uses it to read the upstream's `codex.rate_limits` events without buffering
//! the stream (see `usage.rs`); other observers (e.g. one that learns response ids from
//! `response.created`) plug in through [`DataObserver`], several at once as a tuple.
//!
//! | input | output |
//! | --- | --- |
//! | a line not starting with `data:` | passed through unchanged, as soon as its first bytes show it is not a data line |
//! | a `data:` line, up to [`MAX_LINE`] bytes before its end | held until its end (`\n` or `\r`), then given to the observer: kept byte for byte, or rewritten as `data: <replacement>` with the line's own end |
//! | a line longer than [`MAX_LINE`] | passed through unread (held bytes flushed, the rest streamed) |
//! | an incomplete line at the end of the stream | passed through unread: a client never dispatches an event without its end |
//!
//! The output does not depend on how the input is cut into chunks (a proptest checks it).
//! Holding a data line until its end delays nothing a client can use: an event is
//! dispatched only at the blank line that follows it. Lines end at `\n` or `\r`, as the SSE
//! format allows (`\r\n` is read as a line ending at `\r` followed by an empty one ending
//! at `\n`: the bytes sent are the same, and an empty line is never rewritten). A
//! multi-line `data` value is given to the observer one line at a time.

use bytes::{Bytes, BytesMut};

/// Longest line read (bytes before its `\n`): the most the tap holds per stream. Longer
/// lines are passed through unread; `codex.rate_limits` events are far smaller.
pub(crate) const MAX_LINE: usize = 256 * 1024;

const DATA: &[u8] = b"data:";

/// What to do with one `data:` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum DataLine {
    /// Pass it on unchanged.
    Keep,
    /// Send `data: <this>` instead (the value must hold no line break).
    Replace(Bytes),
}

/// Reads the value of each `data:` line of a stream.
pub(crate) trait DataObserver {
    /// `value` is the line after `data:` and one optional space, without its line end.
    fn data(&mut self, value: &[u8]) -> DataLine;
}

/// Two observers in turn: the second sees the line as the first left it.
impl<A: DataObserver, B: DataObserver> DataObserver for (A, B) {
    fn data(&mut self, value: &[u8]) -> DataLine {
        match self.0.data(value) {
            DataLine::Keep => self.1.data(value),
            DataLine::Replace(first) => match self.1.data(&first) {
                DataLine::Keep => DataLine::Replace(first),
                second => second,
            },
        }
    }
}

/// The tap: feed it the stream's chunks in order, send on what it returns.
pub(crate) struct SseTap<O> {
    observer: O,
    /// The start of a line that may be a data line, waiting for its `\n`.
    held: Vec<u8>,
    /// The current line is passed through unread until its `\n`.
    passing: bool,
    max_line: usize,
}

impl<O: DataObserver> SseTap<O> {
    pub(crate) fn new(observer: O) -> Self {
        Self::with_max_line(observer, MAX_LINE)
    }

    fn with_max_line(observer: O, max_line: usize) -> Self {
        SseTap {
            observer,
            held: Vec::new(),
            passing: false,
            max_line,
        }
    }

    /// Takes one chunk of the stream; returns the bytes to send now (possibly empty).
    pub(crate) fn feed(&mut self, chunk: Bytes) -> Bytes {
        let mut out = Output::default();
        let mut pos = 0;
        while pos < chunk.len() {
            let rest = &chunk[pos..];
            match rest.iter().position(|&b| b == b'\n' || b == b'\r') {
                Some(i) => {
                    let end = pos + i + 1;
                    if self.passing {
                        self.passing = false;
                        out.push(chunk.slice(pos..end));
                    } else if self.held.is_empty() {
                        self.line(chunk.slice(pos..end), &mut out);
                    } else {
                        self.held.extend_from_slice(&chunk[pos..end]);
                        let line = Bytes::from(std::mem::take(&mut self.held));
                        self.line(line, &mut out);
                    }
                    pos = end;
                }
                None => {
                    if self.passing {
                        out.push(chunk.slice(pos..));
                    } else if self.held.len() + rest.len() > self.max_line
                        || !may_be_data(&self.held, rest)
                    {
                        // Not a line to read: what is held goes out, the rest streams.
                        self.passing = true;
                        out.push(Bytes::from(std::mem::take(&mut self.held)));
                        out.push(chunk.slice(pos..));
                    } else {
                        self.held.extend_from_slice(rest);
                    }
                    pos = chunk.len();
                }
            }
        }
        out.into_bytes()
    }

    /// Whether nothing is held.
    pub(crate) fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// At the end of the stream: the incomplete last line, if any, unread.
    pub(crate) fn finish(&mut self) -> Bytes {
        self.passing = false;
        Bytes::from(std::mem::take(&mut self.held))
    }

    /// One whole line, its end (`\n` or `\r`) included.
    fn line(&mut self, line: Bytes, out: &mut Output) {
        let content = line.len() - 1;
        let ending = 1;
        let body = &line[..content];
        let Some(value) = body.strip_prefix(DATA) else {
            out.push(line);
            return;
        };
        if content > self.max_line {
            out.push(line);
            return;
        }
        let value = value.strip_prefix(b" ").unwrap_or(value);
        match self.observer.data(value) {
            DataLine::Keep => out.push(line),
            DataLine::Replace(new) => {
                let mut rewritten = BytesMut::with_capacity(DATA.len() + 1 + new.len() + ending);
                rewritten.extend_from_slice(b"data: ");
                rewritten.extend_from_slice(&new);
                rewritten.extend_from_slice(&line[line.len() - ending..]);
                out.push(rewritten.freeze());
            }
        }
    }
}

/// Whether a line starting with `held` then `more` (no `\n` in either) can still be a data
/// line.
fn may_be_data(held: &[u8], more: &[u8]) -> bool {
    let seen = held.len().min(DATA.len());
    if held[..seen] != DATA[..seen] {
        return false;
    }
    let wanted = &DATA[seen..];
    let n = wanted.len().min(more.len());
    more[..n] == wanted[..n]
}

/// The pieces to send for one chunk; one piece (the common case: a chunk of whole lines,
/// nothing rewritten) is sent without copying.
#[derive(Default)]
struct Output {
    pieces: Vec<Bytes>,
}

impl Output {
    fn push(&mut self, piece: Bytes) {
        if !piece.is_empty() {
            self.pieces.push(piece);
        }
    }

    fn into_bytes(mut self) -> Bytes {
        match self.pieces.len() {
            0 => Bytes::new(),
            1 => self.pieces.pop().unwrap_or_default(),
            _ => {
                let len = self.pieces.iter().map(Bytes::len).sum();
                let mut all = BytesMut::with_capacity(len);
                for piece in &self.pieces {
                    all.extend_from_slice(piece);
                }
                all.freeze()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Records every data value; replaces values that start with `swap:` by `SWAPPED(<n>)`.
    #[derive(Default)]
    struct Recorder {
        seen: Vec<Vec<u8>>,
    }

    impl DataObserver for Recorder {
        fn data(&mut self, value: &[u8]) -> DataLine {
            self.seen.push(value.to_vec());
            if value.starts_with(b"swap:") {
                DataLine::Replace(Bytes::from(format!("SWAPPED({})", value.len())))
            } else {
                DataLine::Keep
            }
        }
    }

    fn run(input: &[u8], cuts: &[usize], max_line: usize) -> (Vec<u8>, Vec<Vec<u8>>) {
        let mut tap = SseTap::with_max_line(Recorder::default(), max_line);
        let mut out = Vec::new();
        let mut last = 0;
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        cuts.sort_unstable();
        for cut in cuts.into_iter().chain([input.len()]) {
            out.extend_from_slice(&tap.feed(Bytes::copy_from_slice(&input[last..cut])));
            last = cut;
        }
        out.extend_from_slice(&tap.finish());
        (out, tap.observer.seen)
    }

    #[test]
    fn data_lines_are_read_and_rewritten_with_their_own_line_end() {
        let input =
            b"event: x\ndata: {\"a\":1}\n\ndata:swap:1\r\n: comment\ndata\nid: 7\ndata: swap:tail";
        let (out, seen) = run(input, &[], MAX_LINE);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "event: x\ndata: {\"a\":1}\n\ndata: SWAPPED(6)\r\n: comment\ndata\nid: 7\ndata: swap:tail"
        );
        // `data` alone has no colon (an empty value the observer has no use for); the
        // unfinished last line is passed on unread.
        assert_eq!(seen, [b"{\"a\":1}".to_vec(), b"swap:1".to_vec()]);
    }

    /// A stream whose lines end at a lone `\r` (the SSE format allows it) is read line by
    /// line like any other: each data line is given to the observer as soon as it ends,
    /// never held to the end of the stream.
    #[test]
    fn lone_carriage_returns_end_lines() {
        let mut tap = SseTap::new(Recorder::default());
        assert_eq!(
            tap.feed(Bytes::from_static(b"event: x\rdata: swap:1\r")),
            "event: x\rdata: SWAPPED(6)\r"
        );
        assert!(tap.is_empty());
        assert_eq!(
            tap.feed(Bytes::from_static(b"\rdata: b\r\r")),
            "\rdata: b\r\r"
        );
        assert_eq!(tap.observer.seen, [b"swap:1".to_vec(), b"b".to_vec()]);
    }

    #[test]
    fn lines_over_the_limit_pass_unread_whole_or_in_pieces() {
        let long = format!("data: swap:{}\n", "x".repeat(20));
        for cuts in [vec![], vec![3], vec![8, 9, 10], vec![25]] {
            let (out, seen) = run(long.as_bytes(), &cuts, 16);
            assert_eq!(out, long.as_bytes(), "{cuts:?}");
            assert!(seen.is_empty(), "{cuts:?}");
        }
        // At the limit, the line is read.
        let fits = format!("data:swap:{}\n", "x".repeat(6));
        assert_eq!(fits.len() - 1, 16);
        let (out, seen) = run(fits.as_bytes(), &[4], 16);
        assert_eq!(out, b"data: SWAPPED(11)\n");
        assert_eq!(seen.len(), 1);
    }

    #[test]
    fn nothing_but_a_possible_data_line_is_held() {
        let mut tap = SseTap::new(Recorder::default());
        assert_eq!(tap.feed(Bytes::from_static(b"event: resp")), "event: resp");
        assert_eq!(
            tap.feed(Bytes::from_static(b"onse.created\nda")),
            "onse.created\n"
        );
        assert_eq!(tap.feed(Bytes::from_static(b"ta: {}")), "");
        assert_eq!(tap.feed(Bytes::from_static(b"\n\n")), "data: {}\n\n");
        assert_eq!(tap.feed(Bytes::from_static(b"dat")), "");
        assert_eq!(tap.feed(Bytes::from_static(b"e: 1")), "date: 1");
        assert_eq!(tap.finish(), "");
    }

    #[test]
    fn two_observers_see_the_line_in_turn() {
        struct Upper;
        impl DataObserver for Upper {
            fn data(&mut self, value: &[u8]) -> DataLine {
                DataLine::Replace(Bytes::from(value.to_ascii_uppercase()))
            }
        }
        let mut tap = SseTap::new((Upper, Recorder::default()));
        // The recorder sees `SWAP:A`, which it does not rewrite.
        assert_eq!(
            tap.feed(Bytes::from_static(b"data: swap:a\n")),
            "data: SWAP:A\n"
        );
        assert_eq!(tap.feed(Bytes::from_static(b"data: b\n")), "data: B\n");
        assert_eq!(tap.observer.1.seen, [b"SWAP:A".to_vec(), b"B".to_vec()]);
    }

    /// SSE-like text: fields, comments, blank lines, `\r\n` ends, data lines with and
    /// without `swap:`, and arbitrary bytes.
    fn stream() -> impl Strategy<Value = Vec<u8>> {
        let line = prop_oneof![
            "(event|id|retry): [a-z0-9. ]{0,12}\n".prop_map(String::into_bytes),
            "data: ?(swap:)?[a-z{}\":, ]{0,24}(\r|\n|\r\n)".prop_map(String::into_bytes),
            Just(b"\n".to_vec()),
            ": [ -~]{0,10}\n".prop_map(String::into_bytes),
            proptest::collection::vec(any::<u8>(), 0..24),
        ];
        proptest::collection::vec(line, 0..24).prop_map(|lines| lines.concat())
    }

    proptest! {
        #[test]
        fn chunk_boundaries_do_not_change_the_output(
            input in stream(),
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
            max_line in prop_oneof![Just(MAX_LINE), 4usize..40],
        ) {
            let whole = run(&input, &[], max_line);
            let cut = run(&input, &cuts, max_line);
            prop_assert_eq!(&whole, &cut);
            // A byte at a time, the worst case for holding.
            let every: Vec<usize> = (0..input.len()).collect();
            prop_assert_eq!(&whole, &run(&input, &every, max_line));
        }

        #[test]
        fn lines_nobody_rewrites_pass_byte_identical(
            input in stream(),
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
        ) {
            // Without `swap:` nothing is rewritten.
            let input: Vec<u8> = String::from_utf8_lossy(&input).replace("swap:", "keep:").into_bytes();
            let (out, _) = run(&input, &cuts, MAX_LINE);
            prop_assert_eq!(out, input);
        }

        #[test]
        fn rewrites_touch_only_their_lines(
            before in "event: [a-z: ]{0,20}\n", value in "[a-z]{0,10}", after in "id: [a-z: ]{0,20}\n",
            cuts in proptest::collection::vec(any::<usize>(), 0..6),
        ) {
            let input = format!("{before}data: swap:{value}\n{after}");
            let (out, _) = run(input.as_bytes(), &cuts, MAX_LINE);
            let expected = format!("{before}data: SWAPPED({})\n{after}", value.len() + 5);
            prop_assert_eq!(String::from_utf8(out).unwrap(), expected);
        }
    }
}
