//! A tar+gzip layer read into memory, refusing what could leave the
//! artifact or exhaust the host: entries with `..` or an absolute path,
//! symbolic and hard links (a service's YAML needs neither), devices,
//! FIFOs, more than [`Limits::files`] files, more than [`Limits::bytes`]
//! decompressed bytes (a gzip bomb stops at the cap, it is never inflated
//! in full). Only regular files are returned; directories are skipped.
//! Nothing is written to disk.

use std::io::Read;

use crate::render::service::File;

/// Caps on one archive.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Decompressed bytes of the whole tar stream.
    pub bytes: u64,
    /// Entries of any type.
    pub files: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            bytes: 16 * 1024 * 1024,
            files: 1000,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("archive entry {path:?}: {why}")]
    Refused { path: String, why: &'static str },
    #[error("archive decompresses to more than {0} bytes")]
    TooLarge(u64),
    #[error("archive has more than {0} entries")]
    TooManyFiles(usize),
    #[error("archive entry {0:?} is not UTF-8 text")]
    NotText(String),
    #[error("not a tar+gzip archive: {0}")]
    Corrupt(String),
}

/// The regular files of a `.tar.gz`, under `limits`.
///
/// # Errors
///
/// Any refused entry refuses the whole archive.
pub fn read(gz: &[u8], limits: Limits) -> Result<Vec<File>, Error> {
    let mut data = Vec::new();
    let mut reader = flate2::read::GzDecoder::new(gz).take(limits.bytes + 1);
    reader
        .read_to_end(&mut data)
        .map_err(|e| Error::Corrupt(e.to_string()))?;
    if data.len() as u64 > limits.bytes {
        return Err(Error::TooLarge(limits.bytes));
    }
    entries(&data, limits.files)
}

fn entries(data: &[u8], max_files: usize) -> Result<Vec<File>, Error> {
    let mut files = Vec::new();
    let mut at = 0;
    let mut count = 0;
    let mut long_name: Option<String> = None;
    let mut pax_path: Option<String> = None;
    while at + 512 <= data.len() {
        let header = &data[at..at + 512];
        if header.iter().all(|b| *b == 0) {
            break;
        }
        count += 1;
        if count > max_files {
            return Err(Error::TooManyFiles(max_files));
        }
        let size =
            octal(&header[124..136]).ok_or_else(|| Error::Corrupt("bad size field".to_owned()))?;
        let size = usize::try_from(size).map_err(|_| Error::Corrupt("size".to_owned()))?;
        let body_at = at + 512;
        let body = data
            .get(body_at..body_at.saturating_add(size))
            .ok_or_else(|| Error::Corrupt("truncated entry".to_owned()))?;
        at = body_at + size.div_ceil(512) * 512;
        let typeflag = header[156];
        let mut name = cstr(&header[0..100]);
        if &header[257..262] == b"ustar" {
            let prefix = cstr(&header[345..500]);
            if !prefix.is_empty() {
                name = format!("{prefix}/{name}");
            }
        }
        if let Some(n) = long_name.take() {
            name = n;
        }
        if let Some(n) = pax_path.take() {
            name = n;
        }
        match typeflag {
            b'L' => {
                long_name = Some(cstr(body));
                continue;
            }
            b'x' => {
                pax_path = pax(body);
                continue;
            }
            b'g' => continue,
            _ => {}
        }
        let path = clean(&name)?;
        match typeflag {
            b'0' | 0 | b'7' => {
                let text =
                    String::from_utf8(body.to_vec()).map_err(|_| Error::NotText(path.clone()))?;
                files.push(File { path, text });
            }
            b'5' => {}
            b'1' => {
                return Err(Error::Refused {
                    path,
                    why: "hard links are refused",
                });
            }
            b'2' => {
                return Err(Error::Refused {
                    path,
                    why: "symbolic links are refused",
                });
            }
            b'3' | b'4' => {
                return Err(Error::Refused {
                    path,
                    why: "devices are refused",
                });
            }
            b'6' => {
                return Err(Error::Refused {
                    path,
                    why: "FIFOs are refused",
                });
            }
            _ => {
                return Err(Error::Refused {
                    path,
                    why: "unknown entry type",
                });
            }
        }
    }
    Ok(files)
}

/// The entry's path relative to the archive's root; `..`, absolute paths
/// and empty names are refused.
fn clean(name: &str) -> Result<String, Error> {
    let refused = |why| Error::Refused {
        path: name.to_owned(),
        why,
    };
    if name.starts_with('/') || name.starts_with('\\') || name.contains(':') {
        return Err(refused("absolute paths are refused"));
    }
    let parts: Vec<&str> = name
        .split(['/', '\\'])
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.contains(&"..") {
        return Err(refused("paths with .. are refused"));
    }
    if parts.is_empty() {
        return Ok(String::new());
    }
    Ok(parts.join("/"))
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn octal(b: &[u8]) -> Option<u64> {
    let s = cstr(b);
    let s = s.trim_matches([' ', '\0']);
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(s, 8).ok()
}

/// The `path` record of a PAX extended header.
fn pax(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    text.lines().find_map(|l| {
        let (_, rec) = l.split_once(' ')?;
        rec.strip_prefix("path=").map(str::to_owned)
    })
}

/// A `.tar.gz` of `(path, type, body)` entries, for tests.
#[cfg(test)]
pub(crate) fn build(entries: &[(&str, u8, &[u8])]) -> Vec<u8> {
    use std::io::Write as _;
    let mut tar = Vec::new();
    for (path, t, body) in entries {
        let mut h = [0u8; 512];
        h[..path.len()].copy_from_slice(path.as_bytes());
        h[100..107].copy_from_slice(b"0000644");
        h[124..135].copy_from_slice(format!("{:011o}", body.len()).as_bytes());
        h[156] = *t;
        h[257..263].copy_from_slice(b"ustar\0");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        tar.extend_from_slice(&h);
        tar.extend_from_slice(body);
        tar.resize(tar.len().div_ceil(512) * 512, 0);
    }
    tar.extend_from_slice(&[0; 1024]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).expect("in memory");
    gz.finish().expect("in memory")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_files_are_read_and_hostile_entries_refused() {
        let ok = build(&[("./", b'5', b""), ("./deploy/a.yaml", b'0', b"kind: X\n")]);
        let files = read(&ok, Limits::default()).expect("reads");
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].path, "deploy/a.yaml");
        for (entry, t) in [
            ("../evil.yaml", b'0'),
            ("a/../../evil.yaml", b'0'),
            ("/etc/passwd", b'0'),
            ("link", b'2'),
            ("hard", b'1'),
            ("dev", b'3'),
            ("blk", b'4'),
            ("fifo", b'6'),
        ] {
            let gz = build(&[(entry, t, b"")]);
            assert!(
                matches!(read(&gz, Limits::default()), Err(Error::Refused { .. })),
                "{entry}"
            );
        }
    }

    #[test]
    fn a_gzip_bomb_and_a_file_flood_stop_at_their_caps() {
        let zeros = vec![b'a'; 4 * 1024 * 1024];
        let bomb = build(&[("big.yaml", b'0', &zeros)]);
        assert!(bomb.len() < 64 * 1024, "compresses well");
        let small = Limits {
            bytes: 1024 * 1024,
            files: 10,
        };
        assert_eq!(read(&bomb, small).err(), Some(Error::TooLarge(1024 * 1024)));
        let names: Vec<String> = (0..11).map(|i| format!("f{i}.yaml")).collect();
        let many: Vec<(&str, u8, &[u8])> =
            names.iter().map(|n| (n.as_str(), b'0', &b""[..])).collect();
        assert_eq!(
            read(&build(&many), small).err(),
            Some(Error::TooManyFiles(10))
        );
    }
}
