//! Decoded images (PNG and JPEG through the `image` crate) and image folders.

use lepton_core::error::{LeptonError, Result};
use lepton_core::vision::{ImageView, PixelFormat};
use std::path::{Path, PathBuf};

/// Most bytes decoding one picture may allocate (128 MiB).
pub const MAX_DECODE_BYTES: u64 = 128 << 20;

/// A decoded image: RGB8 or GRAY8 pixels, tightly packed, with the name it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// File name (or another label for in-memory images).
    pub name: String,
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `Rgb8` or `Gray8`.
    pub format: PixelFormat,
    /// Pixels, row-major.
    pub data: Vec<u8>,
}

impl Image {
    /// Decodes an image file.
    pub fn open(path: &Path) -> Result<Image> {
        let bytes = std::fs::read(path).map_err(|e| LeptonError::io(path, e))?;
        let name = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
        Self::decode(&bytes, &name).map_err(|e| match e {
            LeptonError::Image { reason, .. } => LeptonError::Image { path: path.to_path_buf(), reason },
            other => other,
        })
    }

    /// Decodes PNG or JPEG bytes; `name` labels the image. A picture whose header asks for more
    /// than [`MAX_DECODE_BYTES`] (about 40 megapixels of 8-bit RGB) is refused before decoding.
    pub fn decode(bytes: &[u8], name: &str) -> Result<Image> {
        let err = |e: image::ImageError| LeptonError::Image { path: PathBuf::from(name), reason: e.to_string() };
        let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| LeptonError::Image { path: PathBuf::from(name), reason: e.to_string() })?;
        let mut limits = image::Limits::default();
        limits.max_alloc = Some(MAX_DECODE_BYTES);
        reader.limits(limits);
        let img = reader.decode().map_err(err)?;
        let (width, height) = (img.width() as usize, img.height() as usize);
        let (format, data) = match img {
            image::DynamicImage::ImageLuma8(g) => (PixelFormat::Gray8, g.into_raw()),
            other => (PixelFormat::Rgb8, other.into_rgb8().into_raw()),
        };
        Ok(Image { name: name.to_string(), width, height, format, data })
    }

    /// A view for preprocessing; fails if `data` does not match the geometry.
    pub fn view(&self) -> Result<ImageView<'_>> {
        ImageView::packed(&self.data, self.width, self.height, self.format)
            .map_err(|e| LeptonError::core(format!("image `{}`", self.name), e))
    }
}

/// Decodes a JPEG picture into `out` as packed RGB (its capacity is reused, so a stream of
/// same-sized pictures decodes without growing it); returns (width, height). Refuses pictures over
/// [`MAX_DECODE_BYTES`] before decoding.
pub fn decode_jpeg_into(bytes: &[u8], out: &mut Vec<u8>) -> std::result::Result<(usize, usize), String> {
    use image::ImageDecoder;
    let mut decoder = image::codecs::jpeg::JpegDecoder::new(std::io::Cursor::new(bytes))
        .map_err(|e| format!("not a JPEG picture: {e}"))?;
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    decoder.set_limits(limits).map_err(|e| e.to_string())?;
    let (w, h) = decoder.dimensions();
    let color = decoder.color_type();
    let len = decoder.total_bytes();
    if len > MAX_DECODE_BYTES {
        return Err(format!("a {w}x{h} JPEG picture is larger than {} MiB", MAX_DECODE_BYTES >> 20));
    }
    out.clear();
    out.resize(len as usize, 0);
    decoder.read_image(out).map_err(|e| format!("JPEG picture: {e}"))?;
    let (w, h) = (w as usize, h as usize);
    match color {
        image::ColorType::Rgb8 => {}
        image::ColorType::L8 => {
            // Gray to RGB in place, from the end so nothing is overwritten before it is read.
            out.resize(w * h * 3, 0);
            for i in (0..w * h).rev() {
                let v = out[i];
                out[3 * i..3 * i + 3].fill(v);
            }
        }
        other => return Err(format!("JPEG picture in {other:?}; cameras send RGB or gray")),
    }
    Ok((w, h))
}

/// True for file names the image decoders take (`.png`, `.jpg`, `.jpeg`, any case).
pub fn is_image_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
}

/// Image files in `dir`, sorted by file name; an error if the folder is missing or has none.
pub fn list_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| LeptonError::io(dir, e))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| LeptonError::io(dir, e))?.path();
        if path.is_file() && is_image_file(&path) {
            files.push(path);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(LeptonError::io(
            dir,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no .png, .jpg or .jpeg files in this folder"),
        ));
    }
    Ok(files)
}

/// Decodes every image in `dir`, in file-name order.
pub fn load_dir(dir: impl AsRef<Path>) -> Result<Vec<Image>> {
    list_dir(dir.as_ref())?.iter().map(|p| Image::open(p)).collect()
}
