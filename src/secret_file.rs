//! Secret files (passwords, tokens, keys of the sources, the tag source and
//! the API): read one way everywhere, on every use, so a rotation needs no
//! restart.

use std::io::Read as _;
use std::path::Path;

/// The largest secret file read: credentials are a few hundred bytes, and a
/// wrong path (a log, a device) must not be read whole.
pub const MAX_BYTES: u64 = 64 * 1024;

/// The file's text, trimmed. A file larger than [`MAX_BYTES`] or not UTF-8
/// is an error (`InvalidData`), never truncated; callers name the file in
/// their error.
pub fn read(path: &Path) -> std::io::Result<String> {
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(MAX_BYTES + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > MAX_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {MAX_BYTES} bytes: not a secret file"),
        ));
    }
    Ok(text.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_file_is_trimmed_and_capped_never_truncated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        std::fs::write(&path, " s3cret\n").expect("write");
        assert_eq!(read(&path).expect("read"), "s3cret");
        std::fs::write(&path, "a".repeat(usize::try_from(MAX_BYTES).unwrap())).expect("write");
        assert_eq!(read(&path).expect("at the cap").len() as u64, MAX_BYTES);
        std::fs::write(&path, "a".repeat(usize::try_from(MAX_BYTES).unwrap() + 1)).expect("write");
        let e = read(&path).expect_err("over the cap");
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        std::fs::write(&path, [0xff, 0xfe]).expect("write");
        assert_eq!(
            read(&path).expect_err("not UTF-8").kind(),
            std::io::ErrorKind::InvalidData
        );
        assert_eq!(
            read(&dir.path().join("missing"))
                .expect_err("missing")
                .kind(),
            std::io::ErrorKind::NotFound
        );
    }
}
