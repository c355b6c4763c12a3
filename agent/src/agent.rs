//! The agent: wires the manifest source to pod workers (being written).

use crate::cli::{AgentArgs, ResetArgs};

pub fn run(_args: AgentArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}

pub fn reset(_args: &ResetArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
