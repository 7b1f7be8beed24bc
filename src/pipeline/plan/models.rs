//! The model a pipeline scores and its shadow: resolved in the registry, inputs matched to
//! the pipeline's features.

use super::exprs::unknown_feature;
use super::*;

impl Planner<'_> {
    pub(super) fn model(
        &mut self,
        spec: &PipelineSpec,
        models: &dyn ModelCatalog,
        var_of: &HashMap<String, usize>,
        groups: &HashMap<String, GroupBy>,
        derived: &[String],
    ) -> Option<ModelPlan> {
        let m = spec.model.get();
        match (&m.name, &m.version, &m.expr) {
            (Some(name), Some(version), None) => {
                let inputs =
                    self.registry_inputs("model", name, version, models, var_of, groups, derived)?;
                Some(ModelPlan::Registry {
                    name: name.get().clone(),
                    version: version.get().clone(),
                    inputs,
                })
            }
            (None, None, Some(e)) => {
                let ast = self.parse_expr(e)?;
                self.feature_expr(e, &ast, var_of, groups, derived)
                    .map(|expr| ModelPlan::Formula { expr })
            }
            (Some(n), None, None) => {
                self.err(n.span(), "a registry model needs `version` beside `name`");
                None
            }
            (None, Some(v), None) => {
                self.err(v.span(), "a registry model needs `name` beside `version`");
                None
            }
            (None, None, None) => {
                self.err_hint(
                    self.src.table_header(spec.model.span()),
                    "[model] needs a registry model (`name`, `version`) or a formula (`expr`)",
                    "for example name = \"nfl_wp\", version = \"v1\"",
                );
                None
            }
            (_, _, Some(e)) => {
                self.err(
                    e.span(),
                    "[model] takes either `expr` or `name`/`version`, not both",
                );
                None
            }
        }
    }

    /// The variables feeding registry model `name/version`'s inputs, in its order; an error
    /// (about the `what`: "model", "shadow model") when it cannot load or reads a feature the
    /// pipeline does not produce.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn registry_inputs(
        &mut self,
        what: &str,
        name: &Sp<String>,
        version: &Sp<String>,
        models: &dyn ModelCatalog,
        var_of: &HashMap<String, usize>,
        groups: &HashMap<String, GroupBy>,
        derived: &[String],
    ) -> Option<Vec<usize>> {
        let wanted =
            match models.inputs(name.get(), version.get()) {
                Ok(w) => w,
                Err(e) => {
                    self.err_hint(
                    name.span(),
                    format!("{what} `{}/{}` cannot be loaded: {e}", name.get(), version.get()),
                    "models live in models/<name>/<version>/ (manifest.json, model.safetensors)",
                );
                    return None;
                }
            };
        let mut inputs = Vec::new();
        let mut missing = Vec::new();
        for w in &wanted {
            match var_of.get(w) {
                Some(i) => inputs.push(*i),
                None => missing.push(w.as_str()),
            }
        }
        let model = format!("{}/{}", name.get(), version.get());
        match missing[..] {
            [] => {}
            [w] => {
                let e = unknown_feature(w, &(0..0), var_of, groups, derived);
                self.err_hint(
                    name.span(),
                    format!("{what} `{model}` expects feature `{w}`, which this pipeline does not produce"),
                    e.hint.unwrap_or_else(|| "add a [[feature]] or [[derived]] with that name".into()),
                );
            }
            _ => self.err_hint(
                name.span(),
                format!(
                    "this pipeline does not produce {} of the {} features {what} `{model}` expects: {}",
                    missing.len(),
                    wanted.len(),
                    missing.iter().map(|w| format!("`{w}`")).collect::<Vec<_>>().join(", ")
                ),
                "add a [[feature]] or [[derived]] for each; the model's manifest.json lists its inputs",
            ),
        }
        Some(inputs)
    }

    /// `[model] shadow`: validated like a registry model, and not the model itself.
    pub(super) fn shadow(
        &mut self,
        spec: &PipelineSpec,
        models: &dyn ModelCatalog,
        var_of: &HashMap<String, usize>,
        groups: &HashMap<String, GroupBy>,
        derived: &[String],
    ) -> Option<ShadowPlan> {
        let m = spec.model.get();
        let s = m.shadow.as_ref()?.get();
        let same = m.name.as_ref().is_some_and(|n| n.get() == s.name.get())
            && m.version
                .as_ref()
                .is_some_and(|v| v.get() == s.version.get());
        if same {
            self.err_hint(
                s.name.span(),
                format!(
                    "the shadow model `{}/{}` is the pipeline's model",
                    s.name.get(),
                    s.version.get()
                ),
                "a shadow is another model scored beside this one; name a different one",
            );
            return None;
        }
        let inputs = self.registry_inputs(
            "shadow model",
            &s.name,
            &s.version,
            models,
            var_of,
            groups,
            derived,
        )?;
        Some(ShadowPlan {
            name: s.name.get().clone(),
            version: s.version.get().clone(),
            inputs,
        })
    }
}
