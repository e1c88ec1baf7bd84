//! `lodash.get` on JSON values: the original connector reads every mapped attribute with it.
//!
//! An exact key match wins (`"custom.lcf_x"`, `"traits_closeio/title"`); otherwise the key is
//! split into a property path (`a.b`, `a[0]`, `a["b.c"]`) and walked through objects and
//! arrays.

use serde_json::{Map, Value};

/// `lodash.get(obj, path)`. `None` stands for `undefined`; a stored `null` is `Some(Null)`.
pub(crate) fn get<'a>(obj: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(v) = obj.get(path) {
        return Some(v);
    }
    if !is_deep_path(path) {
        return None;
    }
    let segments = split_path(path);
    let (first, rest) = segments.split_first()?;
    let mut current = obj.get(first.as_str())?;
    for segment in rest {
        current = match current {
            Value::Object(map) => map.get(segment.as_str())?,
            Value::Array(items) => items.get(array_index(segment)?)?,
            _ => return None,
        };
    }
    Some(current)
}

/// Like [`get`], but `null` counts as missing (the original skips null and undefined alike).
pub(crate) fn get_present<'a>(obj: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    get(obj, path).filter(|v| !v.is_null())
}

/// A canonical array index (`"0"`, `"12"`, not `"01"`), as JavaScript property access needs.
fn array_index(segment: &str) -> Option<usize> {
    let index: usize = segment.parse().ok()?;
    (index.to_string() == segment).then_some(index)
}

/// `reIsDeepProp`: the key contains a `.` or a bracket pair.
fn is_deep_path(path: &str) -> bool {
    if path.contains('.') {
        return true;
    }
    let mut open = false;
    for c in path.chars() {
        match c {
            '[' => open = true,
            ']' if open => return true,
            _ => {}
        }
    }
    false
}

/// lodash `stringToPath` (`rePropName`): plain runs, `[number]`, `["quoted"]`/`['quoted']`
/// with backslash escapes, and empty segments for `..`, a leading `.` or a trailing `.`.
fn split_path(path: &str) -> Vec<String> {
    let chars: Vec<char> = path.chars().collect();
    let mut out = Vec::new();
    if chars.first() == Some(&'.') {
        out.push(String::new());
    }
    let mut pos = 0;
    while pos < chars.len() {
        match chars[pos] {
            '[' => {
                if let Some((segment, next)) = bracket_segment(&chars, pos) {
                    out.push(segment);
                    pos = next;
                } else {
                    if empty_segment_follows(&chars, pos) {
                        out.push(String::new());
                    }
                    pos += 1;
                }
            }
            '.' => {
                if empty_segment_follows(&chars, pos) {
                    out.push(String::new());
                }
                pos += 1;
            }
            ']' => pos += 1,
            _ => {
                let start = pos;
                while pos < chars.len() && !matches!(chars[pos], '.' | '[' | ']') {
                    pos += 1;
                }
                out.push(chars[start..pos].iter().collect());
            }
        }
    }
    out
}

/// The zero-width alternative of `rePropName`: `(?=(?:\.|\[\])(?:\.|\[\]|$))`.
fn empty_segment_follows(chars: &[char], pos: usize) -> bool {
    let after_sep = match chars.get(pos) {
        Some('.') => pos + 1,
        Some('[') if chars.get(pos + 1) == Some(&']') => pos + 2,
        _ => return false,
    };
    match chars.get(after_sep) {
        None | Some('.') => true,
        Some('[') => chars.get(after_sep + 1) == Some(&']'),
        _ => false,
    }
}

/// `\[(-?\d+(?:\.\d+)?)\]` or `\[(["'])((?:(?!\2)[^\\]|\\.)*?)\2\]` at `pos`; returns the
/// segment and the position after the closing bracket.
fn bracket_segment(chars: &[char], pos: usize) -> Option<(String, usize)> {
    let inner = pos + 1;
    match chars.get(inner)? {
        quote @ ('"' | '\'') => {
            let mut segment = String::new();
            let mut i = inner + 1;
            loop {
                match chars.get(i)? {
                    '\\' => {
                        // reEscapeChar: `\x` → `x`, `\\` → `\`
                        segment.push(*chars.get(i + 1)?);
                        i += 2;
                    }
                    c if c == quote => break,
                    c => {
                        segment.push(*c);
                        i += 1;
                    }
                }
            }
            (chars.get(i + 1) == Some(&']')).then_some((segment, i + 2))
        }
        _ => {
            let mut i = inner;
            if chars.get(i) == Some(&'-') {
                i += 1;
            }
            let int_digits = count_digits(chars, i);
            if int_digits == 0 {
                return None;
            }
            i += int_digits;
            if chars.get(i) == Some(&'.') {
                let frac = count_digits(chars, i + 1);
                if frac > 0 {
                    i += 1 + frac;
                }
            }
            (chars.get(i) == Some(&']')).then(|| (chars[inner..i].iter().collect(), i + 1))
        }
    }
}

fn count_digits(chars: &[char], pos: usize) -> usize {
    chars.get(pos..).map_or(0, |rest| {
        rest.iter().take_while(|c| c.is_ascii_digit()).count()
    })
}

#[cfg(test)]
mod tests {
    use super::{get, split_path};
    use serde_json::{json, Value};

    #[test]
    fn split_path_follows_lodash() {
        let cases: &[(&str, &[&str])] = &[
            ("a", &["a"]),
            ("a.b.c", &["a", "b", "c"]),
            ("a[0].b", &["a", "0", "b"]),
            ("a[\"b.c\"]", &["a", "b.c"]),
            ("a['x\\'y']", &["a", "x'y"]),
            ("a..b", &["a", "", "b"]),
            (".a", &["", "a"]),
            ("a.", &["a", ""]),
            ("a[-1]", &["a", "-1"]),
            ("a[abc]", &["a", "abc"]),
        ];
        for (path, expected) in cases {
            let expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
            assert_eq!(split_path(path), expected, "path {path:?}");
        }
    }

    #[test]
    fn get_prefers_exact_keys_then_walks_paths() {
        let obj = json!({
            "custom.lcf_1": "flat",
            "custom": {"lcf_1": "nested", "lcf_2": "only nested"},
            "traits_closeio/title": "Magician",
            "list": [{"v": 1}, {"v": 2}],
            "nothing": null
        });
        let Value::Object(obj) = obj else {
            unreachable!("literal object")
        };
        let cases: &[(&str, Option<Value>)] = &[
            ("custom.lcf_1", Some(json!("flat"))),
            ("custom.lcf_2", Some(json!("only nested"))),
            ("traits_closeio/title", Some(json!("Magician"))),
            ("list[1].v", Some(json!(2))),
            ("list.0.v", Some(json!(1))),
            ("list.01.v", None),
            ("list[5].v", None),
            ("nothing", Some(Value::Null)),
            ("nothing.deeper", None),
            ("missing", None),
            ("custom.missing", None),
        ];
        for (path, expected) in cases {
            assert_eq!(get(&obj, path).cloned(), *expected, "path {path:?}");
        }
    }
}
