fn main() {
    // Debian's protobuf-compiler provides protoc; tests/run.sh installs it.
    tonic_prost_build::configure()
        .compile_protos(
            &["../../proto/meridian/v1/meridian.proto"],
            &["../../proto"],
        )
        .expect("compiling proto/meridian/v1/meridian.proto");
    println!("cargo:rerun-if-changed=../../proto/meridian/v1/meridian.proto");
}
