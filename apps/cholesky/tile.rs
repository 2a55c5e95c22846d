//! A tile as tasks pass it, and its wire form.
//!
//! On the wire a tile is its shape and its elements as one little-endian byte string, padded so
//! that the elements start 8-byte aligned in a payload of their own: `(rows, cols, pad, elements)`
//! in postcard, `pad` a byte string of 0–7 zeros ([`header`]). ndarray's own serde form wrote and
//! read element by element, which cost process-pool and MPI more than the kernels at b = 500.
//!
//! Out of process nothing else is copied. A tile received in a shared-memory segment (or a mapped
//! file) is read where it lies ([`crate::shm::source_of`]); a task writes its result into a new
//! segment laid out as the result's wire form ([`Out`]), so sending it copies nothing; and a tile
//! the driver received and passes to the next task goes as the segment it came in
//! ([`crate::shm::offer`]). The one copy left per task is of the tile it updates (another process
//! may still read the original).

use std::sync::Arc;

use bytes::Bytes;
use ndarray::{Array2, ArrayView2, ArrayViewMut2};

use crate::shm::SegmentMut;

/// A tile as tasks pass it: shared, so a panel read by many tasks is never copied in process,
/// and updated in place when the task holds the only reference.
pub(crate) type Tile = Arc<Block>;

/// A tile's matrix: in ordinary memory, or read in place from the payload it arrived in.
#[derive(Clone)]
pub struct Block(Storage);

impl std::fmt::Debug for Block {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.in_place() { "in place" } else { "owned" };
        write!(f, "Block({}, {:?})", kind, self.view())
    }
}

#[derive(Clone)]
enum Storage {
    /// Row-major or not, in ordinary memory.
    Owned(Array2<f64>),
    /// Row-major elements at `at` (8-byte aligned) in `src`, a received payload (or a segment this
    /// process wrote the tile into).
    Wire { src: Bytes, at: usize, rows: usize, cols: usize },
}

impl From<Array2<f64>> for Block {
    fn from(a: Array2<f64>) -> Block {
        Block(Storage::Owned(a))
    }
}

impl PartialEq for Block {
    fn eq(&self, other: &Block) -> bool {
        self.view() == other.view()
    }
}

impl Block {
    /// The matrix.
    pub fn view(&self) -> ArrayView2<'_, f64> {
        match &self.0 {
            Storage::Owned(a) => a.view(),
            Storage::Wire { src, at, rows, cols } => {
                // SAFETY: checked when made: `src[at..]` holds rows·cols f64s, 8-byte aligned;
                // the bytes live (and are not written) as long as `self`.
                unsafe { ArrayView2::from_shape_ptr((*rows, *cols), src[*at..].as_ptr().cast::<f64>()) }
            }
        }
    }

    /// Whether the elements are read in place from a received payload.
    pub fn in_place(&self) -> bool {
        matches!(self.0, Storage::Wire { .. })
    }

    /// The tile's whole wire form, when it lies in `src` exactly as [`header`] and the elements.
    fn wire(&self) -> Option<Bytes> {
        let Storage::Wire { src, at, rows, cols } = &self.0 else { return None };
        let h = header(*rows, *cols);
        let start = at.checked_sub(h.len())?;
        (src[start..*at] == h[..]).then(|| src.slice(start..at + rows * cols * 8))
    }
}

/// Length of a postcard varint of `x`.
fn varint_len(x: u64) -> usize {
    (64 - (x | 1).leading_zeros() as usize).div_ceil(7)
}

fn push_varint(mut x: u64, out: &mut Vec<u8>) {
    while x >= 0x80 {
        out.push(x as u8 | 0x80);
        x >>= 7;
    }
    out.push(x as u8);
}

/// The zero padding after the shape that puts a tile's elements at a multiple of 8 bytes.
fn pad_len(rows: usize, cols: usize) -> usize {
    let before = varint_len(rows as u64) + varint_len(cols as u64) + 1 + varint_len((rows * cols * 8) as u64);
    (8 - before % 8) % 8
}

/// The bytes of a tile's wire form before its elements (a multiple of 8 long).
pub(crate) fn header(rows: usize, cols: usize) -> Vec<u8> {
    let mut h = Vec::with_capacity(32);
    push_varint(rows as u64, &mut h);
    push_varint(cols as u64, &mut h);
    let pad = pad_len(rows, cols);
    h.push(pad as u8);
    h.resize(h.len() + pad, 0);
    push_varint((rows * cols * 8) as u64, &mut h);
    h
}

/// Bytes serialised as a byte string.
struct ByteString<'a>(&'a [u8]);

impl serde::Serialize for ByteString<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

/// The elements of a standard-layout matrix as little-endian bytes.
fn element_bytes(a: &[f64]) -> std::borrow::Cow<'_, [u8]> {
    if cfg!(target_endian = "little") {
        // SAFETY: f64 has no padding and every bit pattern is a valid u8; the length is in bytes.
        std::borrow::Cow::Borrowed(unsafe { std::slice::from_raw_parts(a.as_ptr().cast::<u8>(), size_of_val(a)) })
    } else {
        std::borrow::Cow::Owned(a.iter().flat_map(|x| x.to_le_bytes()).collect())
    }
}

impl serde::Serialize for Block {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if let Some(w) = self.wire() {
            crate::shm::offer(&w);
        }
        let a = self.view();
        let a = a.as_standard_layout();
        let data = element_bytes(a.as_slice().expect("standard layout is contiguous"));
        let pad = [0u8; 8];
        let pad = &pad[..pad_len(a.nrows(), a.ncols())];
        (a.nrows() as u64, a.ncols() as u64, ByteString(pad), ByteString(&data)).serialize(s)
    }
}

/// The elements as received: in place in the payload, or copied.
enum Elements {
    /// `len` bytes at `at` in the payload `src`, 8-byte aligned.
    InPlace {
        src: Bytes,
        at: usize,
        len: usize,
    },
    Copied(Vec<f64>),
}

impl<'de> serde::de::Visitor<'de> for ElementsVisitor {
    type Value = Elements;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("the elements of a tile as little-endian bytes")
    }
    fn visit_bytes<E: serde::de::Error>(self, b: &[u8]) -> Result<Elements, E> {
        if !b.len().is_multiple_of(8) {
            return Err(E::custom(format!("a tile of {} bytes is not a whole number of f64", b.len())));
        }
        if cfg!(target_endian = "little")
            && b.as_ptr().cast::<f64>().is_aligned()
            && let Some((src, at)) = crate::shm::source_of(b)
        {
            return Ok(Elements::InPlace { src, at, len: b.len() });
        }
        Ok(Elements::Copied(b.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes"))).collect()))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Elements, A::Error> {
        let mut b = Vec::new();
        while let Some(x) = seq.next_element::<u8>()? {
            b.push(x);
        }
        self.visit_bytes(&b)
    }
}

/// Reads the byte string of the elements.
struct ElementsVisitor;

impl<'de> serde::Deserialize<'de> for Elements {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_bytes(ElementsVisitor)
    }
}

/// The padding (any bytes, ignored).
struct Pad;

impl<'de> serde::de::Visitor<'de> for Pad {
    type Value = Pad;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("padding bytes")
    }
    fn visit_bytes<E: serde::de::Error>(self, _: &[u8]) -> Result<Pad, E> {
        Ok(Pad)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Pad, A::Error> {
        while seq.next_element::<u8>()?.is_some() {}
        Ok(Pad)
    }
}

impl<'de> serde::Deserialize<'de> for Pad {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_bytes(Pad)
    }
}

impl<'de> serde::Deserialize<'de> for Block {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let (rows, cols, Pad, e) = <(u64, u64, Pad, Elements)>::deserialize(d)?;
        let (rows, cols) = (rows as usize, cols as usize);
        let wrong = |len: usize| D::Error::custom(format!("a {}x{} tile with {} elements", rows, cols, len));
        match e {
            Elements::Copied(v) => {
                let len = v.len();
                Array2::from_shape_vec((rows, cols), v).map(Block::from).map_err(|_| wrong(len))
            }
            Elements::InPlace { src, at, len } => match rows.checked_mul(cols).and_then(|n| n.checked_mul(8)) {
                Some(bytes) if bytes == len => Ok(Block(Storage::Wire { src, at, rows, cols })),
                _ => Err(wrong(len / 8)),
            },
        }
    }
}

crate::task_arg!(Block, Tile);

/// A tile being computed by a task: in ordinary memory, or in a new shared-memory segment laid
/// out as the finished tile's wire form.
pub(crate) enum Out {
    Owned(Array2<f64>),
    Segment { seg: SegmentMut, rows: usize, cols: usize, at: usize },
}

impl Out {
    /// The tile `t`, to be overwritten by a kernel: itself when this is its only holder and it is
    /// in ordinary memory; else a copy — into a new segment when `t` was read in place (it came
    /// from another process, where the result will go back), into ordinary memory otherwise.
    pub(crate) fn of(t: Tile) -> Out {
        let t = match Arc::try_unwrap(t) {
            Ok(Block(Storage::Owned(a))) => return Out::Owned(a),
            Ok(b) => Arc::new(b),
            Err(t) => t,
        };
        let v = t.view();
        if t.in_place()
            && let Some(mut out) = Out::segment(v.nrows(), v.ncols())
        {
            let mut o = out.view_mut();
            match (o.as_slice_mut(), v.as_slice()) {
                (Some(o), Some(v)) => o.copy_from_slice(v),
                _ => o.assign(&v),
            }
            return out;
        }
        Out::Owned(v.as_standard_layout().into_owned())
    }

    /// A `rows`×`cols` tile in a new segment with its header written, if a segment can be made.
    fn segment(rows: usize, cols: usize) -> Option<Out> {
        let h = header(rows, cols);
        let mut seg = SegmentMut::create(h.len() + rows.checked_mul(cols)?.checked_mul(8)?).ok()?;
        seg.as_mut_slice()[..h.len()].copy_from_slice(&h);
        Some(Out::Segment { seg, rows, cols, at: h.len() })
    }

    /// The matrix to write (row-major contiguous).
    pub(crate) fn view_mut(&mut self) -> ArrayViewMut2<'_, f64> {
        match self {
            Out::Owned(a) => a.view_mut(),
            Out::Segment { seg, rows, cols, at } => {
                let bytes = &mut seg.as_mut_slice()[*at..];
                assert!(bytes.len() >= *rows * *cols * 8 && bytes.as_ptr().cast::<f64>().is_aligned());
                // SAFETY: checked just above: room for rows·cols aligned f64s, borrowed mutably.
                unsafe { ArrayViewMut2::from_shape_ptr((*rows, *cols), bytes.as_mut_ptr().cast::<f64>()) }
            }
        }
    }

    /// The finished tile.
    pub(crate) fn done(self) -> Tile {
        Arc::new(match self {
            Out::Owned(a) => Block::from(a),
            Out::Segment { seg, rows, cols, at } => Block(Storage::Wire { src: seg.freeze(), at, rows, cols }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apps::cholesky::kernels;
    use ndarray::s;

    #[test]
    fn tiles_cross_the_wire_as_one_aligned_byte_string_and_come_back_equal() {
        let a = kernels::generate(6, 1).slice(s![.., ..4]).to_owned();
        let wire = postcard::to_stdvec(&Block::from(a.clone())).unwrap();
        // Shape (1 + 1 byte), the padding (1 + 3 bytes), the byte length (192: 2 bytes), then the
        // 24 elements from byte 8 on.
        assert_eq!(wire.len(), 8 + 24 * 8);
        assert_eq!(&wire[..8], &header(6, 4)[..]);
        assert_eq!(&wire[8..16], &a[[0, 0]].to_le_bytes());
        assert_eq!(postcard::from_bytes::<Block>(&wire).unwrap(), Block::from(a.clone()));
        for (r, c) in [(1, 1), (500, 500), (1000, 1000), (3, 50_000), (127, 1), (128, 128)] {
            let h = header(r, c);
            assert_eq!(h.len() % 8, 0, "{}x{}", r, c);
            let w = postcard::to_stdvec(&Block::from(Array2::<f64>::zeros((r, c)))).unwrap();
            assert_eq!(&w[..h.len()], &h[..], "{}x{}", r, c);
            assert_eq!(w.len(), h.len() + r * c * 8);
        }
        // A transposed (non-standard) view is sent in row-major order.
        let back: Block =
            postcard::from_bytes(&postcard::to_stdvec(&Block::from(a.clone().reversed_axes())).unwrap()).unwrap();
        assert_eq!(back, Block::from(a.t().to_owned()));
        // Bytes that are not whole f64s, or not the stated shape, are an error, not a panic.
        let mut bad = wire.clone();
        bad[6] -= 1;
        bad.pop();
        assert!(postcard::from_bytes::<Block>(&bad).is_err());
        let mut bad = wire;
        bad[0] = 7;
        assert!(postcard::from_bytes::<Block>(&bad).is_err());
    }

    #[test]
    fn a_tile_from_a_segment_is_read_in_place_and_sent_on_as_that_segment() {
        use crate::task::Payload;
        let a = kernels::generate(240, 2); // 461 kB: a segment (of a size no other test here uses)
        let wire = |t: &Tile| match Payload::local(t.clone()).into_wire() {
            Ok(Payload::Bytes(b)) => b,
            other => panic!("{:?}", other),
        };
        let w = wire(&Arc::new(Block::from(a.clone())));
        assert!(crate::shm::segment_of(&w).is_some());
        let t: Tile = Payload::Bytes(w.clone()).decode().unwrap();
        assert!(t.in_place());
        assert_eq!(t.view(), a.view());
        assert_eq!(t.view().as_ptr() as usize, w.as_ptr() as usize + header(240, 240).len());
        // Sent again: the same segment, not a new encoding.
        let again = wire(&t);
        assert_eq!((again.as_ptr(), again.len()), (w.as_ptr(), w.len()));
        // A task's result is written in a new segment as its own wire form; sending it copies nothing.
        let mut out = Out::of(t.clone());
        out.view_mut()[[3, 4]] += 1.0;
        let r = out.done();
        assert!(r.in_place());
        let sent = wire(&r);
        assert_ne!(sent.as_ptr(), w.as_ptr());
        assert_eq!(sent.as_ptr() as usize + header(240, 240).len(), r.view().as_ptr() as usize);
        let back: Tile = Payload::Bytes(sent).decode().unwrap();
        let mut want = a.clone();
        want[[3, 4]] += 1.0;
        assert_eq!(back.view(), want.view());
        assert_eq!(t.view(), a.view(), "the original tile is not written");
        // Part of a larger value, a tile is encoded with the rest (the offer is not the whole).
        let pair = Payload::local((7u8, (*t).clone())).into_wire().unwrap();
        let Payload::Bytes(pair) = pair else { panic!() };
        assert_eq!(pair.len(), w.len() + 1);
        let (x, u): (u8, Block) = Payload::Bytes(pair).decode().unwrap();
        assert_eq!((x, u.view()), (7, a.view()));
        // In one process a tile is updated in place; a small one is never in a segment.
        let mut own = Out::of(Arc::new(Block::from(a.clone())));
        let p = own.view_mut().as_ptr();
        assert_eq!(own.done().view().as_ptr(), p);
        let small = Arc::new(Block::from(kernels::generate(8, 1)));
        let small: Tile = Payload::Bytes(wire(&small)).decode().unwrap();
        assert!(!small.in_place() && !Out::of(small).done().in_place());
    }
}
