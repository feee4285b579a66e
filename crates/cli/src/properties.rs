//! Java `.properties` files, as `--consumer.config` / `--producer.config` / `--command-config` name them.

use std::collections::BTreeMap;
use std::path::Path;

/// Reads `key=value` (or `key: value`, or `key value`) lines; `#` and `!` start comments; a trailing
/// backslash continues a line. Unicode escapes are not decoded (Kafka client settings do not need them).
pub(crate) fn load(path: &Path) -> Result<BTreeMap<String, String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
    Ok(parse(&text))
}

pub(crate) fn parse(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut logical = String::new();
    for raw in text.lines() {
        let line = raw.trim_start();
        if logical.is_empty() && (line.is_empty() || line.starts_with('#') || line.starts_with('!'))
        {
            continue;
        }
        if let Some(head) = line.strip_suffix('\\') {
            logical.push_str(head);
            continue;
        }
        logical.push_str(line);
        let entry = std::mem::take(&mut logical);
        let split = entry
            .find(['=', ':'])
            .or_else(|| entry.find(char::is_whitespace));
        let (key, value) = match split {
            Some(i) => (&entry[..i], &entry[i + 1..]),
            None => (entry.as_str(), ""),
        };
        out.insert(key.trim().to_owned(), value.trim().to_owned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn reads_java_properties() {
        let props = parse(
            "# comment\n! also a comment\n\nsession.timeout.ms=10000\nclient.id : tool\n\
             group.instance.id  member-1\nbootstrap.servers=a:1,\\\n  b:2\nempty=\n",
        );
        let get = |k: &str| props.get(k).map(String::as_str);
        assert_eq!(get("session.timeout.ms"), Some("10000"));
        assert_eq!(get("client.id"), Some("tool"));
        assert_eq!(get("group.instance.id"), Some("member-1"));
        assert_eq!(get("bootstrap.servers"), Some("a:1,b:2"));
        assert_eq!(get("empty"), Some(""));
        assert_eq!(props.len(), 5);
    }
}
