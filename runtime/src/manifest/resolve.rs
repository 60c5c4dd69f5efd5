//! A manifest against its model: input settings left out read from the model's input, and the
//! whole checked against the model's inputs and outputs.

use super::{field_error, ImageInput, Manifest, Task};
use crate::error::{LeptonError, Result};
use crate::vision::detect::DetectFormat;
use crate::vision::{ColorOrder, Layout};
use lepton_tract::onnx::{Dim, TensorSpec};
use std::path::Path;

impl Manifest {
    /// The manifest for a model: input settings left out are read from the model's declared input
    /// (layout and size from its shape, color from its channels), then everything is checked
    /// against the model's inputs and outputs ([`validate_against`](Self::validate_against)).
    pub fn resolve(mut self, inputs: &[TensorSpec], outputs: &[TensorSpec], path: &Path) -> Result<Self> {
        self.complete(inputs, path)?;
        self.validate_against(inputs, outputs, path)?;
        Ok(self)
    }

    /// Fills `input.layout`, `input.size` and `input.color` from the model's input where the
    /// manifest leaves them out; an error names the field that the model cannot tell.
    pub fn complete(&mut self, inputs: &[TensorSpec], path: &Path) -> Result<()> {
        if !matches!(self.task, Task::Classify | Task::Detect) {
            return Ok(());
        }
        let Some(input) = self.input.as_mut() else { return Ok(()) };
        if input.layout.is_some() && input.size.is_some() && input.color.is_some() {
            return self.preprocess_config(path).map(|_| ());
        }
        let spec = image_spec(input, inputs, path)?;
        let dims: Vec<Option<usize>> = match &spec.dims {
            Some(d) if d.len() == 4 => d.iter().map(|d| if let Dim::Fixed(n) = d { Some(*n) } else { None }).collect(),
            Some(d) => return Err(rank_error(spec, d.len(), path)),
            None => vec![None; 4],
        };
        let shape = spec.shape_text();
        let is_channels = |d: Option<usize>| matches!(d, Some(1 | 3));
        let layout = match input.layout {
            Some(l) => l,
            None => match (is_channels(dims[1]), is_channels(dims[3])) {
                (true, false) => Layout::Nchw,
                (false, true) => Layout::Nhwc,
                _ => {
                    return Err(field_error(
                        path,
                        "input.layout",
                        format!("input `{}` is {shape}: give layout = \"nchw\" or \"nhwc\"", spec.name),
                    ))
                }
            },
        };
        let (c, h, w) = match layout {
            Layout::Nchw => (dims[1], dims[2], dims[3]),
            Layout::Nhwc => (dims[3], dims[1], dims[2]),
        };
        let color = match (input.color, c) {
            (Some(color), _) => color,
            (None, Some(3)) => ColorOrder::Rgb,
            (None, Some(1)) => ColorOrder::Gray,
            (None, _) => {
                return Err(field_error(
                    path,
                    "input.color",
                    format!(
                        "input `{}` is {shape}: its channels do not tell; give color = \"rgb\", \"bgr\" or \"gray\"",
                        spec.name
                    ),
                ))
            }
        };
        let size = match (input.size, w, h) {
            (Some(size), _, _) => size,
            (None, Some(w), Some(h)) if w > 0 && h > 0 => [w, h],
            (None, _, _) => {
                return Err(field_error(
                    path,
                    "input.size",
                    format!(
                        "input `{}` is {shape}, with a dynamic height or width: give size = [WIDTH, HEIGHT]",
                        spec.name
                    ),
                ))
            }
        };
        input.layout = Some(layout);
        input.color = Some(color);
        input.size = Some(size);
        self.preprocess_config(path)?;
        Ok(())
    }

    /// Checks the manifest against the model's declared inputs and outputs: input rank and size,
    /// layout, label count against the output size. Errors name the manifest field.
    pub fn validate_against(&self, inputs: &[TensorSpec], outputs: &[TensorSpec], path: &Path) -> Result<()> {
        let fixed = |d: &Dim| {
            if let Dim::Fixed(n) = d {
                Some(*n)
            } else {
                None
            }
        };
        if let (Some(expected), Some(input), Some(layout)) =
            (self.image_input_shape(), self.input.as_ref(), self.input.as_ref().and_then(|i| i.layout))
        {
            let spec = image_spec(input, inputs, path)?;
            if let Some(dims) = &spec.dims {
                if dims.len() != 4 {
                    return Err(rank_error(spec, dims.len(), path));
                }
                let axis_names = match layout {
                    Layout::Nchw => {
                        ["batch", "channels (input.color)", "height (input.size[1])", "width (input.size[0])"]
                    }
                    Layout::Nhwc => {
                        ["batch", "height (input.size[1])", "width (input.size[0])", "channels (input.color)"]
                    }
                };
                for (axis, (d, want)) in dims.iter().zip(expected).enumerate().skip(1) {
                    if let Some(n) = fixed(d) {
                        if n != want {
                            let field = if axis_names[axis].starts_with("channels") {
                                "input.color"
                            } else if matches!((layout, axis), (Layout::Nchw, 1) | (Layout::Nhwc, 3)) {
                                "input.layout"
                            } else {
                                "input.size"
                            };
                            return Err(field_error(
                                path,
                                field,
                                format!(
                                    "implies {} = {want}, but input `{}` is {} (layout {})",
                                    axis_names[axis],
                                    spec.name,
                                    spec.shape_text(),
                                    layout.name()
                                ),
                            ));
                        }
                    }
                }
            }
        }
        let out_last = |o: &TensorSpec| o.dims.as_ref().and_then(|d| d.last()).and_then(fixed);
        match self.task {
            Task::Classify | Task::Keyword | Task::Vad if !self.labels.is_empty() => {
                if let Some(n) = outputs.first().and_then(out_last) {
                    if n != self.labels.len() {
                        return Err(field_error(
                            path,
                            "labels",
                            format!(
                                "has {} entries but output `{}` has {n} classes",
                                self.labels.len(),
                                outputs[0].name
                            ),
                        ));
                    }
                }
            }
            Task::Detect => {
                let d = self.detect.as_ref().ok_or_else(|| field_error(path, "detect", "missing"))?;
                let c = self.labels.len();
                let first = outputs.first().ok_or_else(|| field_error(path, "detect", "the model has no outputs"))?;
                let dims: Vec<Option<usize>> = first.dims.iter().flatten().map(fixed).collect();
                let (axis_value, want, what) = match d.format {
                    DetectFormat::Yolov5 => (dims.last().copied().flatten(), 5 + c, "5 + labels (last axis)"),
                    DetectFormat::Yolov8 => {
                        (dims.get(dims.len().wrapping_sub(2)).copied().flatten(), 4 + c, "4 + labels (axis -2)")
                    }
                    DetectFormat::Ssd => {
                        let scores = outputs.get(1).ok_or_else(|| {
                            field_error(path, "detect.format", "ssd needs two outputs (boxes, scores)")
                        })?;
                        (out_last(scores), c, "labels (scores' last axis)")
                    }
                };
                if let Some(v) = axis_value {
                    if v != want {
                        return Err(field_error(
                            path,
                            "labels",
                            format!(
                                "has {c} entries, so output `{}` should have {what} = {want}, but it has {v} ({})",
                                first.name,
                                first.shape_text()
                            ),
                        ));
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// The model input an image manifest describes: `input.name`, else the first input.
fn image_spec<'s>(input: &ImageInput, inputs: &'s [TensorSpec], path: &Path) -> Result<&'s TensorSpec> {
    match &input.name {
        Some(n) => inputs.iter().find(|s| &s.name == n).ok_or_else(|| {
            field_error(path, "input.name", format!("the model has no input `{n}` (inputs: {})", names(inputs)))
        }),
        None => inputs.first().ok_or_else(|| field_error(path, "input", "the model has no inputs")),
    }
}

fn rank_error(spec: &TensorSpec, rank: usize, path: &Path) -> LeptonError {
    field_error(
        path,
        "input",
        format!("describes an image (rank 4) but input `{}` has rank {rank} ({})", spec.name, spec.shape_text()),
    )
}

fn names(specs: &[TensorSpec]) -> String {
    specs.iter().map(|s| format!("`{}`", s.name)).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::super::tests::DIGITS;
    use super::*;

    fn spec(name: &str, dims: &[usize]) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            elem_type: "FLOAT".into(),
            dims: Some(dims.iter().map(|&d| Dim::Fixed(d)).collect()),
        }
    }

    #[test]
    fn disagreements_with_the_model_name_the_field() {
        let m = Manifest::from_toml(DIGITS, Path::new("m.toml")).unwrap();
        let p = Path::new("model.onnx");
        m.validate_against(&[spec("image", &[1, 1, 16, 16])], &[spec("logits", &[1, 3])], p).unwrap();
        let e = m.validate_against(&[spec("image", &[1, 1, 28, 28])], &[spec("logits", &[1, 3])], p).unwrap_err();
        assert!(e.to_string().contains("input.size"), "{e}");
        let e = m.validate_against(&[spec("image", &[1, 3, 16, 16])], &[spec("logits", &[1, 3])], p).unwrap_err();
        assert!(e.to_string().contains("input.color"), "{e}");
        let e = m.validate_against(&[spec("image", &[1, 16, 16])], &[spec("logits", &[1, 3])], p).unwrap_err();
        assert!(e.to_string().contains("rank 3"), "{e}");
        let e = m.validate_against(&[spec("image", &[1, 1, 16, 16])], &[spec("logits", &[1, 10])], p).unwrap_err();
        assert!(e.to_string().contains("`labels`") && e.to_string().contains("10 classes"), "{e}");
        // Symbolic dimensions are accepted.
        let sym = TensorSpec {
            name: "image".into(),
            elem_type: "FLOAT".into(),
            dims: Some(vec![Dim::Symbol("N".into()), Dim::Fixed(1), Dim::Unknown, Dim::Unknown]),
        };
        m.validate_against(&[sym], &[spec("logits", &[1, 3])], p).unwrap();
    }

    #[test]
    fn layout_size_and_color_left_out_are_read_from_the_model() {
        let p = Path::new("model.onnx");
        let text = "task = \"classify\"\nlabels = [\"a\", \"b\"]\n[input]\nmean = [0.5]\n";
        let m = Manifest::from_toml(text, p).unwrap();
        let logits = [spec("logits", &[1, 2])];
        let nchw = m.clone().resolve(&[spec("x", &[1, 3, 48, 192])], &logits, p).unwrap();
        assert_eq!(nchw.image_input(p).unwrap(), (Layout::Nchw, [192, 48], ColorOrder::Rgb));
        let nhwc = m.clone().resolve(&[spec("x", &[1, 32, 64, 1])], &logits, p).unwrap();
        assert_eq!(nhwc.image_input(p).unwrap(), (Layout::Nhwc, [64, 32], ColorOrder::Gray));
        assert_eq!(nhwc.image_input_shape(), Some([1, 32, 64, 1]));
        // A dynamic size must be written; an ambiguous shape needs the layout.
        let dynamic = TensorSpec {
            name: "x".into(),
            elem_type: "FLOAT".into(),
            dims: Some(vec![Dim::Symbol("N".into()), Dim::Fixed(3), Dim::Symbol("H".into()), Dim::Symbol("W".into())]),
        };
        let e = m.clone().resolve(&[dynamic], &logits, p).unwrap_err().to_string();
        assert!(e.contains("input.size") && e.contains("Nx3xHxW") && e.contains("size = [WIDTH, HEIGHT]"), "{e}");
        let e = m.clone().resolve(&[spec("x", &[1, 3, 8, 3])], &logits, p).unwrap_err().to_string();
        assert!(e.contains("input.layout") && e.contains("1x3x8x3"), "{e}");
        // Written values win, and are still checked against the model.
        let bgr = Manifest::from_toml(&text.replace("mean", "color = \"bgr\"\nmean"), p).unwrap();
        let r = bgr.clone().resolve(&[spec("x", &[1, 3, 8, 8])], &logits, p).unwrap();
        assert_eq!(r.image_input(p).unwrap().2, ColorOrder::Bgr);
        let e = bgr.resolve(&[spec("x", &[1, 1, 8, 8])], &logits, p).unwrap_err().to_string();
        assert!(e.contains("input.color"), "{e}");
        // Without a model, the unset values are named.
        let e = m.preprocess_config(p).unwrap_err().to_string();
        assert!(e.contains("input.layout") && e.contains("not set"), "{e}");
    }

    #[test]
    fn detect_label_count_is_checked_against_the_output_layout() {
        let text = "task = \"detect\"\nlabels=[\"a\",\"b\"]\n[input]\nlayout=\"nchw\"\nsize=[64,64]\ncolor=\"rgb\"\n[detect]\nformat=\"yolov8\"";
        let m = Manifest::from_toml(text, Path::new("d.toml")).unwrap();
        let inputs = [spec("images", &[1, 3, 64, 64])];
        m.validate_against(&inputs, &[spec("out", &[1, 6, 84])], Path::new("d.onnx")).unwrap();
        let e = m.validate_against(&inputs, &[spec("out", &[1, 84, 6])], Path::new("d.onnx")).unwrap_err();
        assert!(e.to_string().contains("4 + labels"), "{e}");
    }
}
