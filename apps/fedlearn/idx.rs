//! The IDX files of MNIST and Fashion-MNIST (`train-images-idx3-ubyte[.gz]`, …), gzipped or not:
//! a big-endian header (magic `0x00000803` for images, `0x00000801` for labels, then the
//! dimensions) and the unsigned bytes.

use std::io::Read;
use std::path::{Path, PathBuf};

use bytes::Bytes;

/// Magic number of an IDX file of unsigned bytes with three dimensions (images).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of unsigned bytes with one dimension (labels).
pub const LABELS_MAGIC: u32 = 0x0000_0801;

/// Which split of a dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// The training images (`train-*`).
    Train,
    /// The test images (`t10k-*`).
    Test,
}

impl Split {
    fn prefix(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "t10k",
        }
    }
}

/// Labelled grey-scale images, row-major, one byte per pixel (0 = background).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Images {
    /// Rows of an image.
    pub rows: u32,
    /// Columns of an image.
    pub cols: u32,
    /// `len() · rows · cols` pixels.
    pub pixels: Bytes,
    /// One label (0..=9) per image.
    pub labels: Bytes,
}

impl Images {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Pixels of one image.
    pub fn pixels_per_image(&self) -> usize {
        self.rows as usize * self.cols as usize
    }

    /// The images at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> Images {
        let p = self.pixels_per_image();
        let mut pixels = Vec::with_capacity(indices.len() * p);
        for &i in indices {
            pixels.extend_from_slice(&self.pixels[i * p..(i + 1) * p]);
        }
        Images {
            rows: self.rows,
            cols: self.cols,
            pixels: pixels.into(),
            labels: indices.iter().map(|&i| self.labels[i]).collect::<Vec<u8>>().into(),
        }
    }

    /// The first `n` images (all if there are fewer).
    pub fn head(&self, n: usize) -> Images {
        let n = n.min(self.len());
        Images {
            rows: self.rows,
            cols: self.cols,
            pixels: self.pixels.slice(..n * self.pixels_per_image()),
            labels: self.labels.slice(..n),
        }
    }
}

/// The images and labels files of `split` in `dir`: `NAME` or `NAME.gz`, the first that exists
/// (`NAME.gz` named in the error when neither does).
pub fn files(dir: &Path, split: Split) -> Result<(PathBuf, PathBuf), String> {
    let find = |kind: &str| {
        let name = format!("{}-{}", split.prefix(), kind);
        let plain = dir.join(&name);
        let gz = dir.join(format!("{}.gz", name));
        if gz.is_file() {
            Ok(gz)
        } else if plain.is_file() {
            Ok(plain)
        } else {
            Err(format!("{} not found (nor {})", gz.display(), name))
        }
    };
    Ok((find("images-idx3-ubyte")?, find("labels-idx1-ubyte")?))
}

fn is_gz(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "gz")
}

fn open(path: &Path) -> Result<Box<dyn Read>, String> {
    let f = std::fs::File::open(path).map_err(|e| format!("cannot read {}: {}", path.display(), e))?;
    let f = std::io::BufReader::new(f);
    Ok(if is_gz(path) { Box::new(flate2::read::GzDecoder::new(f)) } else { Box::new(f) })
}

/// The header of an IDX file: its magic number and dimensions.
fn read_header(r: &mut dyn Read, path: &Path, magic: u32) -> Result<Vec<u32>, String> {
    let corrupt = |what: String| format!("{} is not an IDX file of MNIST format: {}", path.display(), what);
    let mut word = [0u8; 4];
    let mut next = |r: &mut dyn Read| r.read_exact(&mut word).map(|_| u32::from_be_bytes(word));
    let m = next(r).map_err(|e| corrupt(format!("cannot read its header ({})", e)))?;
    if m != magic {
        return Err(corrupt(format!("magic number {:#010x}, expected {:#010x}", m, magic)));
    }
    let dims = (magic & 0xff) as usize;
    (0..dims).map(|_| next(r).map_err(|e| corrupt(format!("cannot read its header ({})", e)))).collect()
}

/// Size of the data after the header, from the file's length (or, gzipped, the gzip trailer's
/// length of the uncompressed data modulo 2³²).
fn data_len(path: &Path, header_len: u64) -> Result<u64, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read {}: {}", path.display(), e))?;
    if !is_gz(path) {
        return Ok(meta.len().saturating_sub(header_len));
    }
    use std::io::{Seek, SeekFrom};
    let mut f = std::fs::File::open(path).map_err(|e| format!("cannot read {}: {}", path.display(), e))?;
    let mut isize = [0u8; 4];
    f.seek(SeekFrom::End(-4))
        .and_then(|_| f.read_exact(&mut isize))
        .map_err(|e| format!("{} is not a gzip file: {}", path.display(), e))?;
    Ok((u32::from_le_bytes(isize) as u64).wrapping_sub(header_len) & 0xffff_ffff)
}

/// Checks the headers and sizes of a split's two files without reading their data: the magic
/// numbers, equal counts, and the data lengths the headers announce (for the preflight).
pub fn check(dir: &Path, split: Split) -> Result<usize, String> {
    let (images, labels) = files(dir, split)?;
    let dims = read_header(&mut *open(&images)?, &images, IMAGES_MAGIC)?;
    let n = read_header(&mut *open(&labels)?, &labels, LABELS_MAGIC)?[0];
    if dims[0] != n {
        return Err(format!("{} has {} images but {} has {} labels", images.display(), dims[0], labels.display(), n));
    }
    let want = dims.iter().map(|&d| d as u64).product::<u64>();
    for (path, header, want) in [(&images, 16, want), (&labels, 8, n as u64)] {
        let got = data_len(path, header)?;
        // A gzip trailer holds the length modulo 2³².
        let want_mod = if is_gz(path) { want & 0xffff_ffff } else { want };
        if got != want_mod {
            return Err(format!(
                "{} is corrupt: its header announces {} bytes of data, the file holds {}",
                path.display(),
                want,
                got
            ));
        }
    }
    Ok(n as usize)
}

fn read_data(r: &mut dyn Read, path: &Path, len: usize) -> Result<Vec<u8>, String> {
    let mut data = Vec::with_capacity(len);
    r.take(len as u64 + 1).read_to_end(&mut data).map_err(|e| format!("{} is corrupt: {}", path.display(), e))?;
    if data.len() != len {
        return Err(format!(
            "{} is corrupt: its header announces {} bytes of data, it holds {}{}",
            path.display(),
            len,
            if data.len() > len { "more" } else { "fewer" },
            if data.len() > len { String::new() } else { format!(" ({})", data.len()) }
        ));
    }
    Ok(data)
}

/// Reads a split: every image and label, checked (magic numbers, counts, lengths, labels 0..=9).
pub fn load(dir: &Path, split: Split) -> Result<Images, String> {
    let (images, labels) = files(dir, split)?;
    let mut r = open(&images)?;
    let dims = read_header(&mut *r, &images, IMAGES_MAGIC)?;
    let (n, rows, cols) = (dims[0] as usize, dims[1], dims[2]);
    let pixels = read_data(&mut *r, &images, n * rows as usize * cols as usize)?;
    let mut r = open(&labels)?;
    let m = read_header(&mut *r, &labels, LABELS_MAGIC)?[0] as usize;
    if m != n {
        return Err(format!("{} has {} images but {} has {} labels", images.display(), n, labels.display(), m));
    }
    let label_bytes = read_data(&mut *r, &labels, n)?;
    if let Some(bad) = label_bytes.iter().find(|&&l| l > 9) {
        return Err(format!("{} is corrupt: label {} (expected 0..=9)", labels.display(), bad));
    }
    Ok(Images { rows, cols, pixels: pixels.into(), labels: label_bytes.into() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write_idx(dir: &Path, split: Split, n: u32, gz: bool) {
        let mut img = [IMAGES_MAGIC, n, 2, 3].iter().flat_map(|w| w.to_be_bytes()).collect::<Vec<u8>>();
        img.extend((0..n * 6).map(|i| i as u8));
        let mut lab = [LABELS_MAGIC, n].iter().flat_map(|w| w.to_be_bytes()).collect::<Vec<u8>>();
        lab.extend((0..n).map(|i| (i % 10) as u8));
        for (kind, data) in [("images-idx3-ubyte", img), ("labels-idx1-ubyte", lab)] {
            let name = format!("{}-{}", split.prefix(), kind);
            if gz {
                let f = std::fs::File::create(dir.join(format!("{}.gz", name))).unwrap();
                let mut e = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
                e.write_all(&data).unwrap();
                e.finish().unwrap();
            } else {
                std::fs::write(dir.join(name), data).unwrap();
            }
        }
    }

    #[test]
    fn plain_and_gzipped_files_read_the_same() {
        for gz in [false, true] {
            let d = tempfile::tempdir().unwrap();
            write_idx(d.path(), Split::Test, 12, gz);
            assert_eq!(check(d.path(), Split::Test), Ok(12));
            let im = load(d.path(), Split::Test).unwrap();
            assert_eq!((im.len(), im.rows, im.cols), (12, 2, 3));
            assert_eq!(&im.pixels[6..12], &[6, 7, 8, 9, 10, 11]);
            assert_eq!(im.labels[11], 1);
            let s = im.select(&[3, 1]);
            assert_eq!(
                (&s.pixels[..], &s.labels[..]),
                (&[18, 19, 20, 21, 22, 23, 6, 7, 8, 9, 10, 11][..], &[3, 1][..])
            );
            assert!(files(d.path(), Split::Train).unwrap_err().contains("train-images-idx3-ubyte.gz not found"));
        }
    }

    #[test]
    fn truncated_or_foreign_files_are_one_line_errors_naming_the_file() {
        for gz in [false, true] {
            let d = tempfile::tempdir().unwrap();
            write_idx(d.path(), Split::Train, 12, false);
            let img = d.path().join("train-images-idx3-ubyte");
            let mut bytes = std::fs::read(&img).unwrap();
            bytes.truncate(bytes.len() - 5);
            if gz {
                std::fs::remove_file(&img).unwrap();
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(&bytes).unwrap();
                std::fs::write(d.path().join("train-images-idx3-ubyte.gz"), e.finish().unwrap()).unwrap();
            } else {
                std::fs::write(&img, &bytes).unwrap();
            }
            let e = check(d.path(), Split::Train).unwrap_err();
            assert!(e.contains("train-images-idx3-ubyte") && e.contains("corrupt") && !e.contains('\n'), "{}", e);
            let e = load(d.path(), Split::Train).unwrap_err();
            assert!(e.contains("corrupt") && e.contains("fewer"), "{}", e);
        }
        let d = tempfile::tempdir().unwrap();
        write_idx(d.path(), Split::Train, 4, false);
        std::fs::write(d.path().join("train-labels-idx1-ubyte"), b"PK\x03\x04 a zip file").unwrap();
        let e = check(d.path(), Split::Train).unwrap_err();
        assert!(e.contains("not an IDX file") && e.contains("magic number 0x504b0304"), "{}", e);
    }
}
