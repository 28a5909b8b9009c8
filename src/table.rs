//! Plain-text tables for CLI output, and the cells and arguments they are made of.

/// Renders rows under headers, each column as wide as its widest cell.
pub fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = line(headers.iter().map(|h| h.to_string()).collect());
    for row in rows {
        out.push('\n');
        out.push_str(&line(row.clone()));
    }
    out
}

/// An optional value as a table cell (`-` when absent).
pub fn opt(v: Option<&str>) -> String {
    v.unwrap_or("-").to_string()
}

/// A serde name (`Running`, `stopped`, ...) as a table cell.
pub fn name_of<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(e) => format!("({e})"),
    }
}

/// `KEY=VALUE` arguments as a map (empty ones skipped); `what` names them in errors.
pub fn key_values(
    list: &[String],
    what: &str,
) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    use anyhow::Context;
    let mut map = std::collections::BTreeMap::new();
    for kv in list.iter().filter(|s| !s.is_empty()) {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("{what} {kv:?} is not KEY=VALUE"))?;
        map.insert(k.to_string(), v.to_string());
    }
    Ok(map)
}
