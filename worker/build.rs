//! Build script: compiles `csrc/vl_jpeg.c`, the libjpeg(-turbo) glue that decodes JPEGs as Pillow does,
//! and links the system libjpeg (Debian: `libjpeg62-turbo-dev`), dynamically unless `VISLINGO_STATIC_JPEG=1`.

fn main() {
    println!("cargo:rerun-if-changed=csrc/vl_jpeg.c");
    cc::Build::new().file("csrc/vl_jpeg.c").warnings(true).compile("vl_jpeg");
    // VISLINGO_STATIC_JPEG=1 links libjpeg.a into the binary (GPU hosts without Debian's libjpeg62-turbo).
    println!("cargo:rerun-if-env-changed=VISLINGO_STATIC_JPEG");
    if std::env::var("VISLINGO_STATIC_JPEG").is_ok_and(|v| v == "1") {
        println!("cargo:rustc-link-search=native=/usr/lib/x86_64-linux-gnu");
        println!("cargo:rustc-link-lib=static=jpeg");
    } else {
        println!("cargo:rustc-link-lib=jpeg");
    }
}
