//! `minilet image ...` (being written)

use std::path::Path;

pub fn import(_root: &Path, _path: &Path, _name: Option<&str>) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}

pub fn list(_root: &Path, _quiet: bool) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
