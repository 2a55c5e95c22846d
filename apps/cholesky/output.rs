//! The app's HDF5 output (`cholesky.h5`): dataset `L` (and `A` with `save-input`), chunked by
//! tile and compressed with shuffle + deflate, plus run attributes on the root group. Readable by
//! h5py and h5dump.

use std::path::Path;
use std::str::FromStr;

use anyhow::Context;
use hdf5::types::VarLenUnicode;
use ndarray::Array2;

/// Deflate level: 1 is ~as small as 4 on these matrices (random doubles barely compress; the
/// zero upper triangle compresses at any level) and much faster.
pub(crate) const DEFLATE_LEVEL: u8 = 1;

/// Largest chunk side (HDF5 chunks must stay below 4 GiB; 4096² doubles are 128 MiB).
pub(crate) const MAX_CHUNK: usize = 4096;

/// Root-group attributes of the output file.
#[derive(Clone, Debug, PartialEq)]
pub struct Attributes {
    /// Order n of the matrix.
    pub matrix_size: u64,
    /// Tile side.
    pub block_size: u64,
    /// Seed of the input matrix.
    pub seed: u64,
    /// `‖L·Lᵀ − A‖_F / ‖A‖_F` (NaN if not computed).
    pub residual: f64,
    /// How the residual was computed (`full`, `sampled (S of N columns)`, `none`).
    pub residual_method: String,
}

/// Writes `L` (and `A`) with `attrs` to `path`, through a temporary file renamed at the end so a
/// failed write leaves nothing behind.
pub fn write(
    path: &Path,
    l: &Array2<f64>,
    a: Option<&Array2<f64>>,
    block: usize,
    attrs: &Attributes,
) -> anyhow::Result<()> {
    let tmp = path.with_extension("h5.tmp~");
    let result = write_file(&tmp, l, a, block, attrs).and_then(|()| Ok(std::fs::rename(&tmp, path)?));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write {}", path.display()))
}

fn write_file(
    path: &Path,
    l: &Array2<f64>,
    a: Option<&Array2<f64>>,
    block: usize,
    attrs: &Attributes,
) -> anyhow::Result<()> {
    let file = hdf5::File::create(path)?;
    let chunk = block.clamp(1, MAX_CHUNK);
    for (name, m) in std::iter::once(("L", l)).chain(a.map(|a| ("A", a))) {
        let c = (chunk.min(m.nrows().max(1)), chunk.min(m.ncols().max(1)));
        let ds = file.new_dataset::<f64>().shape(m.dim()).chunk(c).shuffle().deflate(DEFLATE_LEVEL).create(name)?;
        ds.write(&m.as_standard_layout())?;
    }
    file.new_attr::<u64>().create("matrix_size")?.write_scalar(&attrs.matrix_size)?;
    file.new_attr::<u64>().create("block_size")?.write_scalar(&attrs.block_size)?;
    file.new_attr::<u64>().create("seed")?.write_scalar(&attrs.seed)?;
    file.new_attr::<f64>().create("residual")?.write_scalar(&attrs.residual)?;
    let method = VarLenUnicode::from_str(&attrs.residual_method).map_err(|e| anyhow::anyhow!("{}", e))?;
    file.new_attr::<VarLenUnicode>().create("residual_method")?.write_scalar(&method)?;
    file.close()?;
    Ok(())
}

/// Reads back the attributes of a file written by [`write`](fn@write).
pub fn read_attributes(path: &Path) -> anyhow::Result<Attributes> {
    let f = hdf5::File::open(path)?;
    Ok(Attributes {
        matrix_size: f.attr("matrix_size")?.read_scalar()?,
        block_size: f.attr("block_size")?.read_scalar()?,
        seed: f.attr("seed")?.read_scalar()?,
        residual: f.attr("residual")?.read_scalar()?,
        residual_method: f.attr("residual_method")?.read_scalar::<VarLenUnicode>()?.as_str().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_chunks_filters_and_attributes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.h5");
        let l = Array2::from_shape_fn((6, 6), |(i, j)| if j <= i { (i * 10 + j) as f64 } else { 0.0 });
        let a = l.t().to_owned();
        let attrs =
            Attributes { matrix_size: 6, block_size: 3, seed: 42, residual: 1.5e-17, residual_method: "full".into() };
        write(&path, &l, Some(&a), 3, &attrs).unwrap();
        assert!(!path.with_extension("h5.tmp~").exists());
        let f = hdf5::File::open(&path).unwrap();
        let ds = f.dataset("L").unwrap();
        assert_eq!(ds.read_2d::<f64>().unwrap(), l);
        assert_eq!(ds.chunk(), Some(vec![3, 3]));
        let filters = format!("{:?}", ds.filters());
        assert!(filters.contains("Shuffle") && filters.contains("Deflate"), "{}", filters);
        assert_eq!(f.dataset("A").unwrap().read_2d::<f64>().unwrap(), a);
        assert_eq!(read_attributes(&path).unwrap(), attrs);
    }

    #[test]
    fn a_failed_write_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("x.h5");
        let l = Array2::<f64>::zeros((2, 2));
        let attrs =
            Attributes { matrix_size: 2, block_size: 2, seed: 0, residual: 0.0, residual_method: "full".into() };
        let e = write(&path, &l, None, 2, &attrs).unwrap_err();
        assert!(format!("{:#}", e).contains("cannot write"), "{:#}", e);
        assert!(!path.exists());
    }
}
