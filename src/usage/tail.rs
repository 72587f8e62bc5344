//! [`Tail`]: the last bytes of a body, at most a fixed window, kept at a cost per chunk rather
//! than per byte when the chunks are `Bytes`.
//!
//! The newest chunks are kept by reference (a `Bytes` clone: a reference count, no copy), as
//! many as cover the window, up to [`MAX_PIECES`]; only when more small chunks arrive is the
//! oldest copied, into a ring of the window's size. So chunks of at least the window's size
//! (the usual case for large bodies) cost a clone and a drop each, whatever their length, and
//! nothing is copied until the end, when the reader asks for a suffix (borrowed from the newest
//! chunk when it holds it). Chunks given as plain slices are copied into the ring (at most the
//! window of each).
//!
//! Must never hold more than the window in its own buffer. The referenced chunks keep their
//! allocations alive until newer chunks cover the window: the last buffers the body handed out.

use std::borrow::Cow;

use bytes::Bytes;

/// Chunks kept by reference at most; older ones are copied into the ring.
const MAX_PIECES: usize = 4;

/// The last `window` bytes of a stream of chunks.
#[derive(Debug)]
pub(crate) struct Tail {
    window: usize,
    /// The bytes before `older` and `last` (the newest of them, at most `window`).
    ring: Ring,
    /// Chunks before `last`, by reference, oldest first (when `last` is under the window).
    older: Pieces,
    /// Their total length.
    older_len: usize,
    /// The newest chunk, by reference (empty when it was copied into the ring).
    last: Bytes,
}

impl Tail {
    pub(crate) fn new(window: usize) -> Tail {
        Tail {
            window,
            ring: Ring::default(),
            older: Pieces::default(),
            older_len: 0,
            last: Bytes::new(),
        }
    }

    /// The window: how many of the last bytes are kept.
    pub(crate) fn window(&self) -> usize {
        self.window
    }

    /// How many of the last bytes to look at first when `look` are wanted: the newest chunk's
    /// length when it is kept by reference and holds a few hundred bytes but fewer than `look`
    /// (read in place, where `look` would be copied from several chunks), else `look`.
    pub(crate) fn first_look(&self, look: usize) -> usize {
        match self.last.len() {
            in_place @ 256.. if in_place < look => in_place,
            _ => look,
        }
    }

    /// Whether nothing is kept but the newest chunk (so a chunk that covers the window may
    /// just [`replace_last`](Self::replace_last)).
    pub(crate) fn holds_last_only(&self) -> bool {
        self.older_len == 0 && self.ring.buf.is_empty()
    }

    /// Keeps `chunk` (at least the window long) in place of the newest chunk, when nothing else
    /// is kept ([`holds_last_only`](Self::holds_last_only)): one clone, one drop.
    #[inline]
    pub(crate) fn replace_last(&mut self, chunk: &Bytes) {
        debug_assert!(chunk.len() >= self.window && self.holds_last_only());
        self.last = chunk.clone();
    }

    /// Adds a chunk by reference.
    #[inline]
    pub(crate) fn push_bytes(&mut self, chunk: &Bytes) {
        if chunk.len() >= self.window && self.older_len == 0 && self.ring.buf.is_empty() {
            // The chunk alone holds the window, and nothing else is kept: one clone, one drop.
            self.last = chunk.clone();
        } else {
            self.push_bytes_slow(chunk);
        }
    }

    fn push_bytes_slow(&mut self, chunk: &Bytes) {
        if chunk.len() >= self.window {
            self.ring.clear();
            self.older.clear();
            self.older_len = 0;
            self.last = chunk.clone();
            return;
        }
        if chunk.is_empty() {
            return;
        }
        let previous = std::mem::replace(&mut self.last, chunk.clone());
        if !previous.is_empty() {
            self.older_len += previous.len();
            self.older.push_back(previous);
        }
        // Drop what newer chunks cover; copy the oldest out when there are too many.
        while let Some(front) = self.older.front() {
            if self.older_len - front.len() + self.last.len() >= self.window {
                self.ring.clear();
            } else if self.older.len() >= MAX_PIECES {
                self.ring.push(front, self.window);
            } else {
                break;
            }
            self.older_len -= front.len();
            self.older.pop_front();
        }
    }

    /// Adds a chunk by copying (at most the window of it).
    pub(crate) fn push_slice(&mut self, chunk: &[u8]) {
        while let Some(front) = self.older.pop_front() {
            self.ring.push(&front, self.window);
        }
        self.older_len = 0;
        let last = std::mem::take(&mut self.last);
        self.ring.push(&last, self.window);
        self.ring.push(chunk, self.window);
    }

    /// The last `n` bytes (at most the window; fewer when the stream was shorter), contiguous:
    /// borrowed from the newest chunk when it holds them, else copied once.
    pub(crate) fn suffix(&self, n: usize) -> Cow<'_, [u8]> {
        let n = n.min(self.window);
        if self.last.len() >= n {
            return Cow::Borrowed(&self.last[self.last.len() - n..]);
        }
        let (older, newer) = self.ring.parts();
        let mut parts: [&[u8]; MAX_PIECES + 2] = [&[]; MAX_PIECES + 2];
        parts[0] = older;
        parts[1] = newer;
        for (slot, piece) in parts[2..].iter_mut().zip(self.older.iter()) {
            *slot = piece;
        }
        parts[MAX_PIECES + 1] = &self.last;
        // Newest first: which parts the suffix needs.
        let mut need = n;
        let mut first = parts.len();
        for part in parts.iter().rev() {
            if need == 0 {
                break;
            }
            first -= 1;
            need -= part.len().min(need);
        }
        let used = &parts[first..];
        let have = n - need;
        let mut non_empty = used.iter().filter(|part| !part.is_empty());
        if let (Some(part), None) = (non_empty.next(), non_empty.next()) {
            return Cow::Borrowed(&part[part.len() - have..]);
        }
        let mut out = Vec::with_capacity(have);
        let mut skip = used.iter().map(|part| part.len()).sum::<usize>() - have;
        for part in used {
            let from = skip.min(part.len());
            skip -= from;
            out.extend_from_slice(&part[from..]);
        }
        Cow::Owned(out)
    }

    /// Bytes held: the ring's capacity and the referenced chunks' lengths.
    pub(crate) fn retained_bytes(&self) -> usize {
        self.ring.buf.capacity() + self.older_len + self.last.len()
    }
}

/// Chunks kept by reference, oldest first: at most [`MAX_PIECES`], in place (keeping them
/// allocates nothing).
#[derive(Debug, Default)]
struct Pieces {
    items: [Bytes; MAX_PIECES],
    len: usize,
}

impl Pieces {
    fn len(&self) -> usize {
        self.len
    }

    fn iter(&self) -> std::slice::Iter<'_, Bytes> {
        self.items[..self.len].iter()
    }

    fn front(&self) -> Option<&Bytes> {
        self.iter().next()
    }

    /// Adds the newest piece; the caller keeps fewer than [`MAX_PIECES`] before adding one.
    fn push_back(&mut self, piece: Bytes) {
        debug_assert!(self.len < MAX_PIECES);
        if let Some(slot) = self.items.get_mut(self.len) {
            *slot = piece;
            self.len += 1;
        }
    }

    fn pop_front(&mut self) -> Option<Bytes> {
        if self.len == 0 {
            return None;
        }
        let front = std::mem::take(&mut self.items[0]);
        self.items[..self.len].rotate_left(1);
        self.len -= 1;
        Some(front)
    }

    fn clear(&mut self) {
        for item in &mut self.items[..self.len] {
            *item = Bytes::new();
        }
        self.len = 0;
    }
}

/// The last `window` bytes pushed into it: a plain buffer until it first fills, then a ring.
#[derive(Debug, Default)]
struct Ring {
    buf: Vec<u8>,
    /// Once full: the index of the oldest byte (where the next byte goes).
    head: usize,
}

impl Ring {
    fn clear(&mut self) {
        self.buf.clear();
        self.head = 0;
    }

    fn push(&mut self, bytes: &[u8], window: usize) {
        if bytes.len() >= window {
            self.clear();
            if self.buf.capacity() < window {
                self.buf.reserve_exact(window);
            }
            self.buf.extend_from_slice(&bytes[bytes.len() - window..]);
            return;
        }
        let mut bytes = bytes;
        if self.buf.len() < window {
            let take = (window - self.buf.len()).min(bytes.len());
            if self.buf.capacity() < self.buf.len() + take {
                // Grow by doubling, never past the window.
                let want = (self.buf.len() + take)
                    .max(2 * self.buf.capacity())
                    .min(window);
                self.buf.reserve_exact(want - self.buf.len());
            }
            self.buf.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
        }
        while !bytes.is_empty() {
            let n = (window - self.head).min(bytes.len());
            self.buf[self.head..self.head + n].copy_from_slice(&bytes[..n]);
            self.head = (self.head + n) % window;
            bytes = &bytes[n..];
        }
    }

    /// The bytes in order: (older, newer).
    fn parts(&self) -> (&[u8], &[u8]) {
        let (newer, older) = self.buf.split_at(self.head);
        (older, newer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tail_of(stream: &[u8], window: usize) -> Vec<u8> {
        stream[stream.len().saturating_sub(window)..].to_vec()
    }

    #[test]
    fn any_mix_of_chunks_gives_the_last_window() {
        let stream: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        for window in [1, 7, 64, 100] {
            for size in [1, 3, 50, 64, 99, 100, 101, 333, 5000] {
                for by_ref in [0, 1, 2] {
                    let mut tail = Tail::new(window);
                    let mut seen = 0;
                    for (i, chunk) in stream.chunks(size).enumerate() {
                        match (by_ref + i) % 3 {
                            0 => tail.push_slice(chunk),
                            _ => tail.push_bytes(&Bytes::copy_from_slice(chunk)),
                        }
                        seen += chunk.len();
                        for n in [1, window / 2, window, window + 1] {
                            assert_eq!(
                                &*tail.suffix(n),
                                &tail_of(&stream[..seen], n.min(window))[..]
                            );
                        }
                        assert!(tail.ring.buf.capacity() <= window);
                        assert!(tail.older.len() < MAX_PIECES);
                    }
                }
            }
        }
    }

    #[test]
    fn a_large_chunk_is_kept_by_reference() {
        let chunk = Bytes::from(vec![7u8; 1000]);
        let mut tail = Tail::new(100);
        tail.push_slice(b"abc");
        tail.push_bytes(&chunk);
        assert!(matches!(tail.suffix(100), Cow::Borrowed(_)));
        assert_eq!(tail.suffix(100).len(), 100);
        assert_eq!(tail.ring.buf.len(), 0);
        // A small chunk after it: both by reference, copied only when a suffix spans them.
        tail.push_bytes(&Bytes::from_static(b"xyz"));
        assert_eq!(tail.older.len(), 1);
        assert!(matches!(tail.suffix(3), Cow::Borrowed(b"xyz")));
        assert_eq!(&tail.suffix(5)[..], b"\x07\x07xyz");
    }
}
