//! Every shipped pipeline file passes validation.

use sideline::pipeline::{self, Registry};

#[test]
fn every_shipped_pipeline_is_valid() {
    let registry = Registry::new(Some("models".into()));
    let files = pipeline::files_in(std::path::Path::new("pipelines")).unwrap();
    assert!(!files.is_empty());
    for f in files {
        match pipeline::load(&f, &registry) {
            Ok(plan) => assert!(!plan.features.is_empty(), "{}", f.display()),
            Err(e) => panic!("{e}"),
        }
    }
}
