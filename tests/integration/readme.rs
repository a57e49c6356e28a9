//! The README's policy examples are the tested files in examples/policies/, verbatim.

use crate::support::repo;

#[test]
fn readme_policy_examples_are_the_example_files() {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README readable");
    let mut found = 0;
    for name in ["observability", "network-agent", "locked-down"] {
        let marker = format!("`examples/policies/{name}.yaml`");
        let after = readme.split_once(&marker).map(|(_, rest)| rest).unwrap_or_else(|| panic!("README lacks {marker}"));
        let block = after
            .split_once("```yaml\n")
            .and_then(|(_, rest)| rest.split_once("```"))
            .map(|(block, _)| block)
            .unwrap_or_else(|| panic!("no yaml block after {marker}"));
        let file = std::fs::read_to_string(repo().join(format!("examples/policies/{name}.yaml"))).expect("example");
        assert_eq!(block, file, "README block for {name} differs from the file");
        found += 1;
    }
    assert_eq!(found, 3);
}
