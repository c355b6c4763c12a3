//! Go's `text/tabwriter`, which kubectl formats every table and `describe` with: cells end
//! with a tab, and a column is as wide as its widest cell (plus padding) over a *block* of
//! consecutive lines that have that column. Reproducing the block rule is what makes the
//! output line up exactly as kubectl's does (e.g. `describe`'s values shift after a line
//! without a tab).

use std::fmt;

#[derive(Debug, Clone)]
pub struct TabWriter {
    minwidth: usize,
    padding: usize,
    text: String,
}

impl TabWriter {
    pub fn new(minwidth: usize, padding: usize) -> Self {
        TabWriter {
            minwidth,
            padding,
            text: String::new(),
        }
    }

    /// kubectl's table printer (`printers.GetNewTabWriter`: minwidth 6, padding 3).
    pub fn table() -> Self {
        Self::new(6, 3)
    }

    /// kubectl describe's writer (minwidth 0, padding 2).
    pub fn describe() -> Self {
        Self::new(0, 2)
    }

    /// Format everything written so far, as `Flush` would.
    pub fn render(&self) -> String {
        let lines: Vec<Vec<&str>> = self.text.split('\n').map(|l| l.split('\t').collect()).collect();
        let mut out = String::with_capacity(self.text.len() * 2);
        let mut widths = Vec::new();
        self.format(&lines, &mut widths, 0, lines.len(), &mut out);
        out
    }

    fn format(&self, lines: &[Vec<&str>], widths: &mut Vec<usize>, line0: usize, line1: usize, out: &mut String) {
        let column = widths.len();
        let mut line0 = line0;
        let mut this = line0;
        while this < line1 {
            // The last cell of a line is not tab-terminated and belongs to no column.
            if column + 1 >= lines[this].len() {
                this += 1;
                continue;
            }
            self.write_lines(lines, widths, line0, this, out);
            line0 = this;
            let mut width = self.minwidth;
            while this < line1 && column + 1 < lines[this].len() {
                width = width.max(lines[this][column].chars().count() + self.padding);
                this += 1;
            }
            widths.push(width);
            self.format(lines, widths, line0, this, out);
            widths.pop();
            line0 = this;
        }
        self.write_lines(lines, widths, line0, line1, out);
    }

    fn write_lines(&self, lines: &[Vec<&str>], widths: &[usize], line0: usize, line1: usize, out: &mut String) {
        for (i, line) in lines.iter().enumerate().take(line1).skip(line0) {
            for (j, cell) in line.iter().enumerate() {
                out.push_str(cell);
                if let Some(&w) = widths.get(j) {
                    let n = w.saturating_sub(cell.chars().count());
                    out.extend(std::iter::repeat_n(' ', n));
                }
            }
            // The text after the last newline is an unterminated line: no newline for it.
            if i + 1 < lines.len() {
                out.push('\n');
            }
        }
    }
}

impl fmt::Write for TabWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.text.push_str(s);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt::Write;

    #[test]
    fn table_columns_take_the_widest_cell_plus_padding() {
        let mut w = TabWriter::table();
        write!(w, "NAME\tREADY\tSTATUS\nnginx-long-name\t1/1\tRunning\n").unwrap();
        assert_eq!(
            w.render(),
            "NAME              READY   STATUS\nnginx-long-name   1/1     Running\n"
        );
    }

    #[test]
    fn a_line_without_a_tab_ends_the_column_block() {
        let mut w = TabWriter::describe();
        write!(
            w,
            "Name:\tweb\nNamespace:\tdefault\nIPs:\n  IP:\t10.0.0.1\nQoS Class:\tBestEffort\n"
        )
        .unwrap();
        assert_eq!(
            w.render(),
            // `IPs:` ends the first block; `  IP:` starts a new one that `QoS Class:` joins.
            "Name:       web\nNamespace:  default\nIPs:\n  IP:       10.0.0.1\nQoS Class:  BestEffort\n"
        );
    }

    #[test]
    fn nested_blocks_and_empty_leading_cells() {
        let mut w = TabWriter::describe();
        write!(w, "Labels:\ta=b\n\tc=d\n  Type\tStatus\n  Ready \tTrue \n").unwrap();
        assert_eq!(
            w.render(),
            "Labels:   a=b\n          c=d\n  Type    Status\n  Ready   True \n"
        );
    }

    #[test]
    fn trailing_tabs_pad_the_last_column() {
        // kubectl top ends every cell with a tab, so its last column is padded too.
        let mut w = TabWriter::table();
        write!(w, "NAME\tCPU(cores)\t\nweb\t5m\t\n").unwrap();
        assert_eq!(w.render(), "NAME   CPU(cores)   \nweb    5m           \n");
    }
}
