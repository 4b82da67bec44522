//! Build script: compiles `csrc/vl_jpeg.c`, the libjpeg(-turbo) glue that decodes JPEGs as Pillow does,
//! and links the system libjpeg (Debian: `libjpeg62-turbo-dev`).

fn main() {
    println!("cargo:rerun-if-changed=csrc/vl_jpeg.c");
    cc::Build::new().file("csrc/vl_jpeg.c").warnings(true).compile("vl_jpeg");
    println!("cargo:rustc-link-lib=jpeg");
}
