//! The names a task hands to git and the filesystem: a repository, a git ref and
//! a path inside the repository. The intake's policy gate refuses a request whose
//! names break these rules and the worker checks them again before it runs git;
//! both call these functions, so what the gate admits the worker accepts.
//!
//! Each returns why a value is unsafe, as a sentence that names no character by
//! its raw form (a description is shown to people).

use std::fmt;

use crate::text::{self, codepoint};

/// Why a name is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameProblem(String);

impl NameProblem {
    fn new(reason: impl Into<String>) -> Self {
        Self(reason.into())
    }
}

impl fmt::Display for NameProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NameProblem {}

/// `owner/name` (more segments allowed) of ASCII letters, digits, `.`, `_` and
/// `-`; no segment empty, `.` or `..`, or starting with `-` (a segment is part of
/// a URL or path git reads, never an option).
pub fn check_repo(repo: &str) -> Result<(), NameProblem> {
    if repo.is_empty() {
        return Err(NameProblem::new("is required (owner/name)"));
    }
    let segments: Vec<&str> = repo.split('/').collect();
    if segments.len() < 2 {
        return Err(NameProblem::new("must be owner/name"));
    }
    for segment in segments {
        if segment.is_empty() {
            return Err(NameProblem::new("has an empty path segment"));
        }
        if segment == "." || segment == ".." {
            return Err(NameProblem::new(format!("has a {segment:?} path segment")));
        }
        if segment.starts_with('-') {
            return Err(NameProblem::new("has a path segment starting with '-'"));
        }
        if let Some(bad) = segment
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(NameProblem::new(format!(
                "has the character {}; segments may only use letters, digits, '.', '_' and '-'",
                shown(bad)
            )));
        }
    }
    Ok(())
}

/// git's ref-name rules (`git check-ref-format`), plus: it does not start with
/// `-` or `+` (never an option, never a forced refspec) and has no bidi or
/// invisible character (a ref that reads as another).
pub fn check_ref(ref_name: &str) -> Result<(), NameProblem> {
    if ref_name.is_empty() {
        return Err(NameProblem::new("is required"));
    }
    if ref_name.starts_with('-') || ref_name.starts_with('+') {
        return Err(NameProblem::new("must not start with '-' or '+'"));
    }
    if let Some(problem) = text::line_problem(ref_name) {
        return Err(NameProblem::new(problem.to_string()));
    }
    if let Some(bad) = ref_name
        .chars()
        .find(|c| c.is_whitespace() || matches!(c, '~' | '^' | ':' | '?' | '*' | '[' | '\\'))
    {
        return Err(NameProblem::new(format!("must not contain {}", shown(bad))));
    }
    if ref_name.contains("..") {
        return Err(NameProblem::new("must not contain '..'"));
    }
    if ref_name.contains("@{") || ref_name == "@" {
        return Err(NameProblem::new("must not contain '@{' or be '@'"));
    }
    if ref_name.starts_with('/') || ref_name.ends_with('/') || ref_name.contains("//") {
        return Err(NameProblem::new(
            "must not start or end with '/' or contain '//'",
        ));
    }
    if ref_name.ends_with('.') {
        return Err(NameProblem::new("must not end with '.'"));
    }
    if ref_name
        .split('/')
        .any(|component| component.starts_with('.') || component.ends_with(".lock"))
    {
        return Err(NameProblem::new(
            "no component may start with '.' or end with '.lock'",
        ));
    }
    Ok(())
}

/// A relative path (empty is the repository root): no leading `/` or `\`, no
/// `..` segment, no control, bidi or invisible character. The worker never hands
/// it to git; the program reads it from task.json, so a leading `-` is its own
/// business (a file may be named so).
pub fn check_path(path: &str) -> Result<(), NameProblem> {
    if path.starts_with('/') || path.starts_with('\\') {
        return Err(NameProblem::new("must be relative to the repository root"));
    }
    if let Some(problem) = text::line_problem(path) {
        return Err(NameProblem::new(problem.to_string()));
    }
    if path.split(['/', '\\']).any(|segment| segment == "..") {
        return Err(NameProblem::new("must not contain a '..' segment"));
    }
    Ok(())
}

/// A character quoted for a description: printable ASCII as itself, anything
/// else by its code point.
fn shown(c: char) -> String {
    if c.is_ascii_graphic() {
        format!("'{c}'")
    } else {
        codepoint(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repos() {
        for good in ["myorg/service", "a/b/c", "my.org/my_service-2", "o/.hidden"] {
            assert_eq!(check_repo(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "single",
            "myorg//x",
            "myorg/./x",
            "myorg/../etc",
            "-x/service",
            "myorg/-service",
            "myorg/serv ice",
            "myorg/sérvice",
            "myorg/ser\u{200B}vice",
            "myorg/a:b",
        ] {
            assert!(check_repo(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn refs() {
        for good in [
            "main",
            "feature/x-1",
            "v1.2.3",
            "release/2026.12",
            "ünïcode",
        ] {
            assert_eq!(check_ref(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "-x",
            "--upload-pack=touch /tmp/x",
            "+main",
            "a..b",
            "main:other",
            "a b",
            "a~1",
            "a^",
            "a?",
            "a*",
            "a[",
            "a\\b",
            "@",
            "a@{1}",
            "/a",
            "a/",
            "a//b",
            "a.",
            ".a",
            "a/.b",
            "a.lock",
            "a/b.lock/c",
            "ma\0in",
            "ma\u{1b}in",
            "main\u{202E}",
            "ma\u{2066}in",
            "ma\u{200B}in",
            "ma\u{FEFF}in",
            "ma\nin",
        ] {
            assert!(check_ref(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn paths() {
        for good in [
            "",
            "docs",
            "docs/guide.md",
            "a/b c/d",
            ".github/workflows",
            "-rf",
        ] {
            assert_eq!(check_path(good), Ok(()), "{good}");
        }
        for bad in [
            "/etc",
            "\\x",
            "..",
            "a/../b",
            "a\\..\\b",
            "a\0b",
            "a\u{1b}b",
            "a\u{202E}b",
            "a\u{200D}b",
            "a\nb",
        ] {
            assert!(check_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn descriptions_are_safe_text() {
        for problem in [
            check_ref("a\u{1b}]8;;x"),
            check_repo("o/\u{202E}x"),
            check_path("\u{200B}"),
        ] {
            let description = problem.expect_err("refused").to_string();
            assert_eq!(text::line_problem(&description), None, "{description}");
        }
    }

    /// Whatever bytes arrive, the checks answer without panicking, and what they
    /// accept has no character the text rules refuse.
    #[test]
    fn random_names_never_panic_and_accepted_ones_are_clean() {
        let mut state = 0xD1B5_4A32_D192_ED03_u64;
        let mut next = move || {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_F491_4F6C_DD1D)
        };
        let alphabet: Vec<char> = "ab-./\\:~^@{}+ \0\u{1b}\u{202E}\u{200B}\u{FEFF}é.lock"
            .chars()
            .collect();
        for _ in 0..20_000 {
            let len = (next() % 16) as usize;
            let name: String = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            let (repo, ref_name, path) = (
                check_repo(&name).is_ok(),
                check_ref(&name).is_ok(),
                check_path(&name).is_ok(),
            );
            if repo || ref_name || path {
                assert_eq!(text::line_problem(&name), None, "{name:?}");
            }
            // nothing git reads as an option
            if repo {
                assert!(!name.split('/').any(|s| s.starts_with('-')), "{name:?}");
            }
            if ref_name {
                assert!(!name.starts_with(['-', '+']), "{name:?}");
            }
            if check_repo(&name).is_ok() || check_path(&name).is_ok() {
                assert!(!name.split(['/', '\\']).any(|s| s == ".."), "{name:?}");
            }
        }
    }
}
