//! Rules for the strings the worker hands to git and the filesystem: a repository
//! name, a git ref and a path inside the repository. The original JCT trusted them;
//! here each returns why a value is unsafe, or `None`.

/// `owner/name` (more segments allowed), segments of `[A-Za-z0-9._-]`, none empty,
/// `.` or `..`.
pub(super) fn repo_problem(repo: &str) -> Option<String> {
    let segments: Vec<&str> = repo.split('/').collect();
    if segments.len() < 2 {
        return Some("must be owner/name".to_string());
    }
    for segment in segments {
        if segment.is_empty() {
            return Some("has an empty path segment".to_string());
        }
        if segment == "." || segment == ".." {
            return Some(format!("has a {segment:?} path segment"));
        }
        if let Some(bad) = segment
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Some(format!(
                "has the character {bad:?}; segments may only use letters, digits, '.', '_' and '-'"
            ));
        }
    }
    None
}

/// git's ref-name rules (`git check-ref-format`), plus: no leading `-`, so a ref can
/// never be read as a command-line option.
pub(super) fn ref_problem(ref_name: &str) -> Option<String> {
    if ref_name.starts_with('-') {
        return Some("must not start with '-'".to_string());
    }
    if let Some(bad) = ref_name.chars().find(|c| {
        c.is_control() || c.is_whitespace() || matches!(c, '~' | '^' | ':' | '?' | '*' | '[' | '\\')
    }) {
        return Some(format!("must not contain {bad:?}"));
    }
    if ref_name.contains("..") {
        return Some("must not contain '..'".to_string());
    }
    if ref_name.contains("@{") || ref_name == "@" {
        return Some("must not contain '@{' or be '@'".to_string());
    }
    if ref_name.starts_with('/') || ref_name.ends_with('/') || ref_name.contains("//") {
        return Some("must not start or end with '/' or contain '//'".to_string());
    }
    if ref_name.ends_with('.') {
        return Some("must not end with '.'".to_string());
    }
    if ref_name
        .split('/')
        .any(|component| component.starts_with('.') || component.ends_with(".lock"))
    {
        return Some("no component may start with '.' or end with '.lock'".to_string());
    }
    None
}

/// A relative path with no `..` segment and no NUL or control characters.
pub(super) fn path_problem(path: &str) -> Option<String> {
    if path.starts_with('/') || path.starts_with('\\') {
        return Some("must be relative to the repository root".to_string());
    }
    if let Some(bad) = path.chars().find(|c| c.is_control()) {
        return Some(format!("must not contain the control character {bad:?}"));
    }
    if path.split(['/', '\\']).any(|segment| segment == "..") {
        return Some("must not contain a '..' segment".to_string());
    }
    None
}
