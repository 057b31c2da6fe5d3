//! Helpers shared by the engine's integration-test modules.

use std::path::PathBuf;

/// The text of a pool set file whose replicas have parts of the given sizes
/// in MiB, named `r<R>p<P>` under `dir`, and the part paths per replica.
pub fn set_text(
    dir: &std::path::Path,
    replicas: &[&[u64]],
    single_hdr: bool,
) -> (String, Vec<Vec<PathBuf>>) {
    let mut text = String::from("PMEMPOOLSET\n");
    if single_hdr {
        text.push_str("OPTION SINGLEHDR\n");
    }
    let mut parts = Vec::new();
    for (r, sizes) in replicas.iter().enumerate() {
        if r > 0 {
            text.push_str("REPLICA\n");
        }
        let mut rep = Vec::new();
        for (p, mib) in sizes.iter().enumerate() {
            let path = dir.join(format!("r{r}p{p}"));
            text.push_str(&format!("{mib}M {}\n", path.display()));
            rep.push(path);
        }
        parts.push(rep);
    }
    (text, parts)
}
