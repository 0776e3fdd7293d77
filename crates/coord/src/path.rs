//! ZooKeeper's path rules (`org.apache.zookeeper.common.PathUtils`).

use crate::Error;

/// Checks a path against ZooKeeper's rules: absolute, no empty segment, no trailing `/` (except
/// the root), no `.` or `..` segment, no null or other forbidden characters.
/// `sequential` allows a trailing `/` because a sequence suffix will be appended, as ZooKeeper does.
pub fn validate_path(path: &str, sequential: bool) -> Result<(), Error> {
    if path.is_empty() {
        return Err(Error::BadArguments("path length must be > 0"));
    }
    if !path.starts_with('/') {
        return Err(Error::BadArguments("path must start with / character"));
    }
    if path.len() == 1 {
        return Ok(());
    }
    if path.ends_with('/') && !sequential {
        return Err(Error::BadArguments("path must not end with / character"));
    }
    let body = if sequential && path.ends_with('/') {
        &path[1..path.len() - 1]
    } else {
        &path[1..]
    };
    if sequential && body.is_empty() {
        return Ok(());
    }
    for segment in body.split('/') {
        if segment.is_empty() {
            return Err(Error::BadArguments("empty node name specified"));
        }
        if segment == "." || segment == ".." {
            return Err(Error::BadArguments("relative paths not allowed"));
        }
    }
    for c in path.chars() {
        let bad = c == '\0'
            || ('\u{1}'..='\u{1f}').contains(&c)
            || ('\u{7f}'..='\u{9f}').contains(&c)
            || ('\u{e000}'..='\u{f8ff}').contains(&c)
            || ('\u{fff0}'..='\u{ffff}').contains(&c);
        if bad {
            return Err(Error::BadArguments("invalid character in path"));
        }
    }
    Ok(())
}

/// The parent of a valid path (`/a/b` → `/a`, `/a` → `/`). The root has no parent.
pub fn parent(path: &str) -> Option<&str> {
    if path == "/" {
        return None;
    }
    match path.rfind('/') {
        Some(0) => Some("/"),
        Some(i) => Some(&path[..i]),
        None => None,
    }
}

/// The last segment of a valid path (`/a/b` → `b`; the root's name is empty).
pub fn name(path: &str) -> &str {
    match path.rfind('/') {
        Some(i) => &path[i + 1..],
        None => path,
    }
}

/// Joins a parent path and a child name.
pub fn join(parent: &str, child: &str) -> String {
    if parent == "/" {
        format!("/{child}")
    } else {
        format!("{parent}/{child}")
    }
}

/// Formats a sequence number as ZooKeeper does (`%010d`): 10 digits, zero padded.
pub fn sequence_suffix(seq: i32) -> String {
    format!("{seq:010}")
}

/// Parses the 10-digit sequence suffix of a sequential node name, if it has one.
pub fn parse_sequence(name: &str) -> Option<i32> {
    let tail = name.len().checked_sub(10).and_then(|i| name.get(i..))?;
    if tail.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
        tail.parse().ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        assert!(validate_path("/", false).is_ok());
        assert!(validate_path("/a/b", false).is_ok());
        assert!(validate_path("", false).is_err());
        assert!(validate_path("a", false).is_err());
        assert!(validate_path("/a/", false).is_err());
        assert!(validate_path("/a/", true).is_ok());
        assert!(validate_path("/a//b", false).is_err());
        assert!(validate_path("/a/./b", false).is_err());
        assert!(validate_path("/a/../b", false).is_err());
        assert!(validate_path("/a\0b", false).is_err());
        assert!(validate_path("/a/.b", false).is_ok());
    }

    #[test]
    fn parents_and_sequences() {
        assert_eq!(parent("/a/b"), Some("/a"));
        assert_eq!(parent("/a"), Some("/"));
        assert_eq!(parent("/"), None);
        assert_eq!(name("/a/b"), "b");
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(sequence_suffix(7), "0000000007");
        assert_eq!(parse_sequence("lock-0000000042"), Some(42));
        assert_eq!(parse_sequence("lock"), None);
        // A multi-byte character across the boundary is not a sequence, and no panic.
        assert_eq!(parse_sequence("ééééééé"), None);
    }
}
