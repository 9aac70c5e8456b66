//! A GGUF pre-flight check, run before llama.cpp sees a file.
//!
//! llama.cpp assumes a well-formed file: a truncated tensor region becomes a SIGBUS through
//! mmap, and some malformed headers abort the process. Walking the header here turns each of
//! those into a typed [`Error::ModelLoad`] instead.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use crate::error::{Error, Result};

const GGUF_MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// Far above any real model; stops a corrupt count from driving a huge allocation.
const MAX_ENTRIES: u64 = 1 << 24;
const MAX_STRING_BYTES: u64 = 1 << 26;
const MAX_TENSOR_DIMS: u32 = 4;
const MAX_ARRAY_NESTING: u32 = 8;

/// What the pre-flight check learned about a GGUF file.
#[derive(Debug, Clone)]
pub(crate) struct GgufSummary {
    pub tensor_count: u64,
    pub chat_template: Option<String>,
    pub architecture: Option<String>,
}

/// Checks that `path` is a complete, well-formed GGUF file.
///
/// # Errors
/// [`Error::ModelLoad`] naming what is wrong: a missing file, a bad magic number, an
/// unsupported version, a header that runs past the end, or tensor data beyond the file's end.
pub(crate) fn check_gguf(path: &Path) -> Result<GgufSummary> {
    let fail = |reason: String| Error::model_load(path, reason);
    let file = File::open(path).map_err(|err| fail(format!("cannot open file: {err}")))?;
    let file_len = file.metadata().map_err(|err| fail(format!("cannot read file metadata: {err}")))?.len();
    check_gguf_bytes(BufReader::new(file), file_len, path)
}

/// As [`check_gguf`], on `file_len` bytes from `source`; `path` names them in errors.
pub(crate) fn check_gguf_bytes(source: impl Read + Seek, file_len: u64, path: &Path) -> Result<GgufSummary> {
    let fail = |reason: String| Error::model_load(path, reason);
    let mut reader = Reader { inner: source, file_len };

    let mut magic = [0u8; 4];
    reader.read_exact(&mut magic).map_err(|_| fail(format!("not a GGUF file: only {file_len} bytes long")))?;
    if &magic != GGUF_MAGIC {
        return Err(fail(format!("not a GGUF file: it starts with {magic:02x?}, not \"GGUF\"")));
    }
    let version = reader.u32().map_err(|err| fail(err.at("version")))?;
    if !(2..=3).contains(&version) {
        return Err(fail(format!("unsupported GGUF version {version} (2 and 3 are supported)")));
    }
    let tensor_count = reader.count("tensor count").map_err(|err| fail(err.at("header")))?;
    let kv_count = reader.count("metadata count").map_err(|err| fail(err.at("header")))?;

    let mut summary = GgufSummary { tensor_count, chat_template: None, architecture: None };
    let mut alignment = DEFAULT_ALIGNMENT;
    for index in 0..kv_count {
        let key = reader.string().map_err(|err| fail(err.at(&format!("metadata key #{index}"))))?;
        let value_type = reader.u32().map_err(|err| fail(err.at(&key)))?;
        match (key.as_str(), value_type) {
            ("tokenizer.chat_template", STRING_TYPE) => {
                summary.chat_template = Some(reader.string().map_err(|err| fail(err.at(&key)))?);
            }
            ("general.architecture", STRING_TYPE) => {
                summary.architecture = Some(reader.string().map_err(|err| fail(err.at(&key)))?);
            }
            ("general.alignment", UINT32_TYPE) => {
                alignment = u64::from(reader.u32().map_err(|err| fail(err.at(&key)))?);
                if alignment == 0 || !alignment.is_power_of_two() {
                    return Err(fail(format!("general.alignment {alignment} is not a power of two")));
                }
            }
            _ => reader.skip_value(value_type).map_err(|err| fail(err.at(&key)))?,
        }
    }

    let mut data_end = 0u64;
    for index in 0..tensor_count {
        let name = reader.string().map_err(|err| fail(err.at(&format!("tensor #{index}"))))?;
        let n_dims = reader.u32().map_err(|err| fail(err.at(&name)))?;
        if n_dims == 0 || n_dims > MAX_TENSOR_DIMS {
            return Err(fail(format!("tensor {name} has {n_dims} dimensions (1 to 4 are valid)")));
        }
        let mut elements = 1u64;
        let mut first_dim = 0;
        for dim_index in 0..n_dims {
            let dim = reader.u64().map_err(|err| fail(err.at(&name)))?;
            if dim_index == 0 {
                first_dim = dim;
            }
            elements =
                elements.checked_mul(dim).ok_or_else(|| fail(format!("tensor {name} has an impossible shape")))?;
        }
        let ggml_type = reader.u32().map_err(|err| fail(err.at(&name)))?;
        let offset = reader.u64().map_err(|err| fail(err.at(&name)))?;
        if offset % alignment != 0 {
            return Err(fail(format!("tensor {name} is misaligned (offset {offset}, alignment {alignment})")));
        }
        // Unknown types are left for llama.cpp to reject by name; sizes are checked where known.
        if let Some((block_bytes, block_elements)) = ggml_type_block(ggml_type) {
            if first_dim % block_elements != 0 {
                return Err(fail(format!("tensor {name}: row of {first_dim} is not a multiple of its block size")));
            }
            let bytes = (elements / block_elements)
                .checked_mul(block_bytes)
                .ok_or_else(|| fail(format!("tensor {name} is impossibly large")))?;
            data_end = data_end.max(offset.saturating_add(bytes));
        }
    }

    let header_end = reader.position().map_err(|err| fail(err.at("tensor table")))?;
    let data_start = header_end.div_ceil(alignment) * alignment;
    let needed = data_start.saturating_add(data_end);
    if needed > file_len {
        return Err(fail(format!(
            "file is truncated or corrupt: its tensors need {needed} bytes but the file has {file_len}"
        )));
    }
    Ok(summary)
}

const UINT32_TYPE: u32 = 4;
const STRING_TYPE: u32 = 8;
const ARRAY_TYPE: u32 = 9;

/// Bytes of one fixed-size GGUF metadata value, by type id.
fn scalar_size(value_type: u32) -> Option<u64> {
    match value_type {
        0 | 1 | 7 => Some(1), // u8, i8, bool
        2 | 3 => Some(2),     // u16, i16
        4..=6 => Some(4),     // u32, i32, f32
        10..=12 => Some(8),   // u64, i64, f64
        _ => None,
    }
}

/// (bytes per block, elements per block) of the ggml tensor types this check knows.
fn ggml_type_block(ggml_type: u32) -> Option<(u64, u64)> {
    Some(match ggml_type {
        0 => (4, 1),       // F32
        1 | 30 => (2, 1),  // F16, BF16
        2 => (18, 32),     // Q4_0
        3 => (20, 32),     // Q4_1
        6 => (22, 32),     // Q5_0
        7 => (24, 32),     // Q5_1
        8 => (34, 32),     // Q8_0
        9 => (36, 32),     // Q8_1
        10 => (84, 256),   // Q2_K
        11 => (110, 256),  // Q3_K
        12 => (144, 256),  // Q4_K
        13 => (176, 256),  // Q5_K
        14 => (210, 256),  // Q6_K
        15 => (292, 256),  // Q8_K
        20 => (18, 32),    // IQ4_NL
        23 => (136, 256),  // IQ4_XS
        24 => (1, 1),      // I8
        25 => (2, 1),      // I16
        26 => (4, 1),      // I32
        27 | 28 => (8, 1), // I64, F64
        _ => return None,
    })
}

struct Reader<R> {
    inner: R,
    file_len: u64,
}

/// A read that ran past the end of the file, or failed outright.
struct ReadError(String);

impl ReadError {
    fn at(self, what: &str) -> String {
        format!("file is truncated or corrupt while reading {what}: {}", self.0)
    }
}

impl<R: Read + Seek> Reader<R> {
    fn read_exact(&mut self, buf: &mut [u8]) -> std::result::Result<(), ReadError> {
        self.inner.read_exact(buf).map_err(|err| ReadError(err.to_string()))
    }

    fn u32(&mut self) -> std::result::Result<u32, ReadError> {
        let mut bytes = [0u8; 4];
        self.read_exact(&mut bytes)?;
        Ok(u32::from_le_bytes(bytes))
    }

    fn u64(&mut self) -> std::result::Result<u64, ReadError> {
        let mut bytes = [0u8; 8];
        self.read_exact(&mut bytes)?;
        Ok(u64::from_le_bytes(bytes))
    }

    fn count(&mut self, what: &str) -> std::result::Result<u64, ReadError> {
        let count = self.u64()?;
        if count > MAX_ENTRIES {
            return Err(ReadError(format!("{what} {count} is implausibly large")));
        }
        Ok(count)
    }

    fn position(&mut self) -> std::result::Result<u64, ReadError> {
        self.inner.stream_position().map_err(|err| ReadError(err.to_string()))
    }

    fn skip(&mut self, bytes: u64) -> std::result::Result<(), ReadError> {
        let target = self.position()?.saturating_add(bytes);
        if target > self.file_len {
            return Err(ReadError(format!("a value runs {} bytes past the end", target - self.file_len)));
        }
        let delta = i64::try_from(bytes).map_err(|_| ReadError("value too large".into()))?;
        self.inner.seek(SeekFrom::Current(delta)).map(|_| ()).map_err(|err| ReadError(err.to_string()))
    }

    fn string(&mut self) -> std::result::Result<String, ReadError> {
        let len = self.u64()?;
        if len > MAX_STRING_BYTES || self.position()?.saturating_add(len) > self.file_len {
            return Err(ReadError(format!("a string of {len} bytes does not fit the file")));
        }
        let mut bytes = vec![0u8; len as usize];
        self.read_exact(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    fn skip_value(&mut self, value_type: u32) -> std::result::Result<(), ReadError> {
        self.skip_nested_value(value_type, 0)
    }

    fn skip_nested_value(&mut self, value_type: u32, depth: u32) -> std::result::Result<(), ReadError> {
        if let Some(size) = scalar_size(value_type) {
            return self.skip(size);
        }
        match value_type {
            STRING_TYPE => {
                let len = self.u64()?;
                self.skip(len)
            }
            ARRAY_TYPE => {
                // Each level costs the file only 12 bytes, so a crafted file could nest deep
                // enough to overflow the stack; real models nest arrays one level at most.
                if depth >= MAX_ARRAY_NESTING {
                    return Err(ReadError(format!("arrays nested more than {MAX_ARRAY_NESTING} deep")));
                }
                let item_type = self.u32()?;
                let len = self.count("array length")?;
                if let Some(size) = scalar_size(item_type) {
                    return self.skip(len.saturating_mul(size));
                }
                for _ in 0..len {
                    self.skip_nested_value(item_type, depth + 1)?;
                }
                Ok(())
            }
            other => Err(ReadError(format!("unknown metadata value type {other}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    /// A GGUF with no tensors whose one metadata value is an array of arrays `depth` deep.
    fn nested_arrays(depth: u32) -> Vec<u8> {
        let mut bytes = b"GGUF".to_vec();
        bytes.extend(3u32.to_le_bytes());
        bytes.extend(0u64.to_le_bytes());
        bytes.extend(1u64.to_le_bytes());
        bytes.extend(4u64.to_le_bytes());
        bytes.extend(b"deep");
        bytes.extend(ARRAY_TYPE.to_le_bytes());
        for _ in 0..depth {
            bytes.extend(ARRAY_TYPE.to_le_bytes());
            bytes.extend(1u64.to_le_bytes());
        }
        bytes.extend(UINT32_TYPE.to_le_bytes());
        bytes.extend(1u64.to_le_bytes());
        bytes.extend(7u32.to_le_bytes());
        bytes.resize(bytes.len().next_multiple_of(DEFAULT_ALIGNMENT as usize), 0);
        bytes
    }

    fn check(bytes: &[u8]) -> Result<GgufSummary> {
        check_gguf_bytes(Cursor::new(bytes), bytes.len() as u64, Path::new("test.gguf"))
    }

    #[test]
    fn arrays_nested_as_deep_as_the_bound_are_read() {
        let summary = check(&nested_arrays(MAX_ARRAY_NESTING - 1)).expect("within the bound");
        assert_eq!(summary.tensor_count, 0);
    }

    #[test]
    fn arrays_nested_past_the_bound_are_refused() {
        match check(&nested_arrays(MAX_ARRAY_NESTING)) {
            Err(Error::ModelLoad { reason, .. }) => assert!(reason.contains("nested more than 8 deep"), "{reason}"),
            other => panic!("expected ModelLoad, got {other:?}"),
        }
    }
}
