//! The characters client text may hold, checked once at the API's edge.
//!
//! Two kinds of field:
//! - **free text** (an order's reason, a report, an acknowledgement's note, a shelving
//!   reason): line breaks and tabs are part of the text; every other control character (NUL,
//!   escapes, C1 controls, DEL) is refused. PostgreSQL cannot store a NUL in `text` at all
//!   (SQLSTATE 22021), and SQLite would store it only to corrupt the exports, logs and labels
//!   the text later reaches — so both stores get the same answer: 422 naming the field.
//! - **single-line** text (a patient's name, a token's label, a ward, an identifier, every
//!   query parameter): no control character at all, no Unicode line or paragraph separator
//!   (U+2028, U+2029: line breaks by another name), and no bidirectional embedding, override
//!   or isolate (U+202A–U+202E, U+2066–U+2069), which make a name display as something other
//!   than what it is (a spoofing vector on lists, labels and the audit trail).
//!
//! [`Body`](crate::extract::Body) applies the free-text rule to every string of every JSON
//! body, and [`QueryParams`](crate::extract::QueryParams) the single-line rule to every query
//! parameter, so a new field cannot forget it; handlers apply [`single_line`] to the fields
//! that are single-line.

use serde_json::Value;

use crate::error::ApiError;

/// What a character is not allowed as, if it is not allowed in free text.
fn refused_in_free_text(c: char) -> Option<&'static str> {
    match c {
        '\n' | '\r' | '\t' => None,
        '\0' => Some("a NUL character"),
        c if c.is_control() => Some("a control character"),
        _ => None,
    }
}

/// What a character is not allowed as, if it is not allowed in single-line text.
fn refused_in_single_line(c: char) -> Option<&'static str> {
    match c {
        '\0' => Some("a NUL character"),
        '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}' => Some("a line break"),
        '\t' => Some("a tab"),
        c if c.is_control() => Some("a control character"),
        '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' => {
            Some("a bidirectional override (it makes text display as something it is not)")
        }
        _ => None,
    }
}

fn check(field: &str, s: &str, refused: fn(char) -> Option<&'static str>) -> Result<(), ApiError> {
    match s
        .char_indices()
        .find_map(|(i, c)| Some((i, c, refused(c)?)))
    {
        None => Ok(()),
        Some((i, c, what)) => Err(ApiError::invalid(format!(
            "{field}: holds {what} (U+{:04X}) at byte {i}; it is not allowed here",
            c as u32
        ))),
    }
}

/// Checks free text: line breaks and tabs are allowed, no other control character.
pub fn free_text(field: &str, s: &str) -> Result<(), ApiError> {
    check(field, s, refused_in_free_text)
}

/// Checks single-line text: no control character (NUL, tab, line breaks, escapes), no line or
/// paragraph separator, no bidirectional override.
pub fn single_line(field: &str, s: &str) -> Result<(), ApiError> {
    check(field, s, refused_in_single_line)
}

/// Checks every string in a JSON body, keys included, as free text; the error names the field
/// by its path (`capabilities[1]`).
pub fn json_free_text(value: &Value) -> Result<(), ApiError> {
    fn walk(path: &mut String, v: &Value) -> Result<(), ApiError> {
        match v {
            Value::String(s) => free_text(if path.is_empty() { "body" } else { path }, s),
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("[{i}]"));
                    walk(path, item)?;
                    path.truncate(len);
                }
                Ok(())
            }
            Value::Object(fields) => {
                for (k, item) in fields {
                    // A key is a field name: single-line, and echoed only as a position.
                    single_line(&format!("a field name in {}", display(path)), k)?;
                    let len = path.len();
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(k);
                    walk(path, item)?;
                    path.truncate(len);
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
    fn display(path: &str) -> &str {
        if path.is_empty() { "the body" } else { path }
    }
    walk(&mut String::new(), value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_text_keeps_line_breaks_and_refuses_other_controls() {
        assert!(free_text("text", "line 1\nline 2\r\n\tindented").is_ok());
        assert!(free_text("text", "Zoë \u{202E} kept: not a name").is_ok());
        for bad in ["a\0b", "\u{1b}[31m", "\u{7f}", "\u{85}", "\u{8}"] {
            let e = free_text("text", bad).unwrap_err();
            assert!(e.message.starts_with("text: "), "{}", e.message);
        }
        assert!(
            free_text("reason", "a\0b")
                .unwrap_err()
                .message
                .contains("NUL")
        );
    }

    #[test]
    fn single_line_refuses_separators_and_bidi_overrides() {
        assert!(single_line("name", "Zoë Ångström 李小龙 O'Brien").is_ok());
        for bad in [
            "a\0b",
            "a\nb",
            "a\tb",
            "a\u{2028}b",
            "a\u{2029}b",
            "evil\u{202E}gnp.exe",
            "a\u{2066}b\u{2069}",
        ] {
            let e = single_line("name", bad).unwrap_err();
            assert!(e.message.starts_with("name: "), "{bad:?}: {}", e.message);
        }
    }

    #[test]
    fn a_json_body_names_the_field_that_holds_the_character() {
        let v = serde_json::json!({"pool": "MRI", "capabilities": ["ok", "x\u{0}"]});
        let e = json_free_text(&v).unwrap_err();
        assert!(e.message.starts_with("capabilities[1]: "), "{}", e.message);
        let v = serde_json::json!({"reason": "line 1\nline 2", "n": 3});
        assert!(json_free_text(&v).is_ok());
        let v = serde_json::json!({"a\u{0}": 1});
        assert!(json_free_text(&v).is_err());
    }
}
