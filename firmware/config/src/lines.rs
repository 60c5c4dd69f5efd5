//! Where a key is in a config's text: the line numbers that errors found after parsing name.

/// `line N: ` for an error at a key's line, or nothing when it is not known.
pub fn at_line(line: Option<usize>) -> String {
    line.map_or(String::new(), |n| format!("line {n}: "))
}

/// The line (from 1) of `key = ...` in `table` (`mqtt`, `pipeline`, `pipeline.source`) of a
/// config's text; for `pipeline` tables, of the `nth` `[[pipeline]]` (from 0). Plain `key = value`
/// lines under table headers, as the README writes them; `None` for other layouts.
pub fn key_line(text: &str, table: &str, nth: Option<usize>, key: &str) -> Option<usize> {
    let mut current = String::new();
    let mut pipeline: Option<usize> = None;
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if let Some(name) = l.strip_prefix("[[").and_then(|r| r.split("]]").next()) {
            current = name.trim().to_string();
            if current == "pipeline" {
                pipeline = Some(pipeline.map_or(0, |n| n + 1));
            }
        } else if let Some(name) = l.strip_prefix('[').and_then(|r| r.split(']').next()) {
            current = name.trim().to_string();
        } else if current == table
            && (nth.is_none() || nth == pipeline)
            && l.strip_prefix(key).is_some_and(|rest| rest.trim_start().starts_with('='))
        {
            return Some(i + 1);
        }
    }
    None
}
