//! What taps does the way a shell would: find a program on `PATH`, split a string into words,
//! quote words back into a command line.
//!
//! ```
//! use taps::shell::{join, quote, split};
//! assert_eq!(split("--bind-to none -x 'A=b c'").unwrap(), ["--bind-to", "none", "-x", "A=b c"]);
//! assert_eq!(quote("a b"), "'a b'");
//! assert_eq!(join(&["x".into(), "$H".into(), "a b".into()], &["$H"]), "x $H 'a b'");
//! ```

use std::path::{Path, PathBuf};

/// A string that does not split into words.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    /// A quote is never closed.
    #[error("unclosed {quote} in {text:?}")]
    Unclosed {
        /// The quote character.
        quote: char,
        /// The whole string.
        text: String,
    },
    /// The string ends in a backslash.
    #[error("trailing backslash in {0:?}")]
    TrailingBackslash(String),
}

/// The program `program` names: a path (if it contains '/') or the first match on `PATH`, if it
/// is an executable file. The one executable-on-PATH check of taps.
pub(crate) fn find_program(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        let p = PathBuf::from(program);
        return is_executable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(program)).find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Splits a string like a POSIX shell (whitespace, single and double quotes, backslash); no
/// expansion of any kind.
pub fn split(s: &str) -> Result<Vec<String>, SplitError> {
    let unclosed = |quote| SplitError::Unclosed { quote, text: s.to_string() };
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err(unclosed('\'')),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => cur.push(c),
                            Some(c) => {
                                cur.push('\\');
                                cur.push(c);
                            }
                            None => return Err(unclosed('"')),
                        },
                        Some(c) => cur.push(c),
                        None => return Err(unclosed('"')),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => cur.push(c),
                    None => return Err(SplitError::TrailingBackslash(s.to_string())),
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

/// Quotes one word for a POSIX shell (unchanged when it needs no quoting).
pub fn quote(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_-./:=@%+,".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Joins words into a shell command line; words listed in `raw` (e.g. `"$PBS_NODEFILE"`) are
/// passed through unquoted.
pub fn join(argv: &[String], raw: &[&str]) -> String {
    argv.iter().map(|w| if raw.contains(&w.as_str()) { w.clone() } else { quote(w) }).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_like_a_shell() {
        assert_eq!(
            split("  --bind-to none -x 'A=b c' \"d\\\"e\" f\\ g ").unwrap(),
            ["--bind-to", "none", "-x", "A=b c", "d\"e", "f g"]
        );
        assert_eq!(split("'open").unwrap_err().to_string(), "unclosed ' in \"'open\"");
        assert!(matches!(split("a\\"), Err(SplitError::TrailingBackslash(_))));
        assert_eq!(split("").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("/a/b-c_d.toml"), "/a/b-c_d.toml");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote(""), "''");
    }

    #[test]
    fn programs_are_found_on_path_or_by_path() {
        assert!(find_program("sh").is_some_and(|p| p.is_absolute()));
        assert_eq!(find_program("/bin/sh"), Some(PathBuf::from("/bin/sh")));
        assert_eq!(find_program("no-such-program-taps"), None);
        let plain = tempfile::NamedTempFile::new().unwrap();
        assert_eq!(find_program(plain.path().to_str().unwrap()), None, "not executable");
    }
}
