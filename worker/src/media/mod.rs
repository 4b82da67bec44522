//! Media decoding and the Pillow operations that the Python reference's image processors rely on.
//!
//! * [`image`]: decode a file or bytes to the RGB8 pixels transformers sees after `convert_to_rgb`.
//! * [`pil`]: bit-exact ports of Pillow 11.0.0's `Image.resize` (convolution filters), `alpha_composite`
//!   and CMYK conversion.
//! * [`video`]: video metadata and frame sampling with FFmpeg, the frames the reference's PyAV loop returns.

pub mod image;
pub mod pil;
pub mod video;

pub use self::image::{
    decode_bytes, decode_file, DecodeOptions, ExifOrientation, MediaError, RgbImage, SixteenBit, DEFAULT_MAX_PIXELS,
};
pub use self::pil::Filter;
pub use self::video::{SampleOptions, SampledVideo, VideoError, VideoInfo};
