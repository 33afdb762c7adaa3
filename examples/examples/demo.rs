//! Zero-setup demo of the workspace (grows as the crates land).

fn main() {
    println!("demo: nothing to show yet");
}
