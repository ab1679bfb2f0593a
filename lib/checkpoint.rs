//! Checkpoint files (optimizer state, the contrastive head): the same bytes for the same
//! contents, and never a non-finite number.
//!
//! The safetensors crate writes its `__metadata__` from a `HashMap`, so two files with the same
//! tensors and metadata differ in the order of their metadata keys. [`write_safetensors`]
//! rewrites the header with every key sorted (the tensors' offsets are unchanged, so any reader
//! loads it as before) and pads it to 8 bytes with spaces, as the crate does.

use std::collections::BTreeMap;
use std::path::Path;

use safetensors::tensor::View;

use crate::error::{Error, Result};

/// Refuses a checkpoint tensor holding NaN or an infinity, naming it, its first bad index and
/// the step (verl and TRL skip the optimiser step on a non-finite gradient; this is the last
/// line behind that).
pub fn ensure_finite(what: &str, name: &str, data: &[f32], step: u64) -> Result<()> {
    match data.iter().position(|x| !x.is_finite()) {
        None => Ok(()),
        Some(i) => Err(Error::Other(format!(
            "{what} `{name}` holds {} at index {i} after step {step}: nothing was written (lower the learning rate, or check the inputs of this step)",
            data[i]
        ))),
    }
}

/// [`ensure_finite`] for a tensor on any device, in any dtype: x - x is 0 for every finite x
/// and NaN otherwise, so one reduction on the device tells; the host looks for the index only
/// when something is wrong.
pub fn ensure_finite_tensor(what: &str, name: &str, t: &candle_core::Tensor, step: u64) -> Result<()> {
    let t32 = t.to_dtype(candle_core::DType::F32)?;
    let zero: f32 = (&t32 - &t32)?.sum_all()?.to_scalar()?;
    if zero == 0.0 {
        return Ok(());
    }
    ensure_finite(what, name, &t32.flatten_all()?.to_vec1::<f32>()?, step)
}

/// Serialises `views` with `meta` as the header's `__metadata__`, every JSON key in sorted
/// order, to `path` through `<path>.tmp` and a rename.
pub fn write_safetensors<V: View>(path: &Path, views: Vec<(String, V)>, meta: &BTreeMap<String, String>) -> Result<()> {
    let bytes = safetensors::tensor::serialize(views, None).map_err(|e| Error::Other(format!("{}: {e}", path.display())))?;
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let header: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + n]).map_err(|e| Error::Other(format!("{}: safetensors header: {e}", path.display())))?;
    let mut sorted: BTreeMap<String, serde_json::Value> = header;
    if !meta.is_empty() {
        sorted.insert("__metadata__".into(), serde_json::to_value(meta).expect("strings serialise"));
    }
    let mut text = serde_json::to_vec(&sorted).expect("json");
    text.resize(text.len().div_ceil(8) * 8, b' ');
    let mut out = Vec::with_capacity(8 + text.len() + bytes.len() - 8 - n);
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(&text);
    out.extend_from_slice(&bytes[8 + n..]);
    crate::table::write_file_atomic(path, &out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::tensor::{Dtype, SafeTensors, TensorView};

    #[test]
    fn same_contents_same_bytes_and_readable() {
        let dir = tempfile::tempdir().unwrap();
        let a: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|x| x.to_le_bytes()).collect();
        let b: Vec<u8> = [3.0f32].iter().flat_map(|x| x.to_le_bytes()).collect();
        let meta: BTreeMap<String, String> = [("step", "3"), ("format", "pt"), ("clipo.head", "linear")].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let write = |p: &Path| {
            let views = vec![
                ("w.exp_avg".to_string(), TensorView::new(Dtype::F32, vec![2], &a).unwrap()),
                ("w".to_string(), TensorView::new(Dtype::F32, vec![1], &b).unwrap()),
            ];
            write_safetensors(p, views, &meta).unwrap();
            std::fs::read(p).unwrap()
        };
        let (x, y) = (write(&dir.path().join("x")), write(&dir.path().join("y")));
        assert_eq!(x, y);
        let hl = u64::from_le_bytes(x[..8].try_into().unwrap()) as usize;
        assert_eq!(hl % 8, 0);
        let header = std::str::from_utf8(&x[8..8 + hl]).unwrap();
        assert!(header.starts_with(r#"{"__metadata__":{"clipo.head":"linear","format":"pt","step":"3"},"w":"#), "{header}");
        let st = SafeTensors::deserialize(&x).unwrap();
        assert_eq!(st.tensor("w.exp_avg").unwrap().data(), &a[..]);
        assert_eq!(st.tensor("w").unwrap().data(), &b[..]);
        let (_, m) = SafeTensors::read_metadata(&x).unwrap();
        assert_eq!(m.metadata().as_ref().unwrap().get("step").unwrap(), "3");
        assert!(ensure_finite("weight", "w", &[1.0, f32::NAN], 4).unwrap_err().to_string().contains("`w` holds NaN at index 1 after step 4"));
    }
}
