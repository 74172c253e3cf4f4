//! Text every store can keep. PostgreSQL's text cannot hold the NUL character (SQLite's
//! can), so a value carrying one is refused at the edge, naming its field, instead of
//! failing deep in one store and not the other.

use serde_json::Value;

/// The JSON path (`a.b[1]`, or the key itself for a top-level field) of the first key
/// or string in `v` that contains a NUL character.
pub fn nul_path(v: &Value) -> Option<String> {
    fn walk(v: &Value, path: &mut String) -> bool {
        match v {
            Value::String(s) => s.contains('\0'),
            Value::Array(items) => items.iter().enumerate().any(|(i, item)| {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                let found = walk(item, path);
                if !found {
                    path.truncate(len);
                }
                found
            }),
            Value::Object(map) => map.iter().any(|(k, item)| {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
                let found = k.contains('\0') || walk(item, path);
                if !found {
                    path.truncate(len);
                }
                found
            }),
            _ => false,
        }
    }
    let mut path = String::new();
    walk(v, &mut path).then_some(path)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_first_value_with_a_nul_is_named_by_its_path() {
        let cases = [
            (json!({"a": "ok", "b": "x\u{0}y"}), Some("b")),
            (json!({"task": {"subject": "\u{0}"}}), Some("task.subject")),
            (json!({"numbers": ["1", "2\u{0}"]}), Some("numbers[1]")),
            (json!({"k\u{0}": 1}), Some("k\u{0}")),
            (json!({"a": "fine", "n": 3, "b": [true, null]}), None),
        ];
        for (v, want) in cases {
            assert_eq!(nul_path(&v).as_deref(), want, "{v}");
        }
    }
}
