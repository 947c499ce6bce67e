fn main() {
    println!("rocmforge: CLI under construction");
}
