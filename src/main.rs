//! The `ringcast` command line.

fn main() -> anyhow::Result<()> {
    Ok(())
}
