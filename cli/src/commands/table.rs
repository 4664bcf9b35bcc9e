//! Aligned columns for terminal output: text left, numbers right.

/// Renders `rows` (the first is the header) with each column as wide as
/// its widest cell; columns listed in `right` are right-aligned.
pub fn render(rows: &[Vec<String>], right: &[usize]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| {
                if right.contains(&c) {
                    format!("{cell:>w$}", w = widths[c])
                } else {
                    format!("{cell:<w$}", w = widths[c])
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn columns_line_up() {
        let rows = vec![
            vec!["TYPE".to_string(), "COUNT".to_string()],
            vec!["vm.CreateVm".to_string(), "3".to_string()],
            vec!["x".to_string(), "1200".to_string()],
        ];
        assert_eq!(
            super::render(&rows, &[1]),
            "TYPE         COUNT\nvm.CreateVm      3\nx             1200\n"
        );
    }
}
