//! Imports `pie:telepathy/mind`, which pied does not provide: launching it must fail with a
//! link error naming that import. (Built for wasm32-wasip2; on wasip1 it is a plain program.)

#[cfg(target_env = "p2")]
mod bindings {
    wit_bindgen::generate!({
        inline: "package pie:telepathy;\ninterface mind { read: func() -> string; }\nworld w { import mind; }",
        world: "w",
    });
}

fn main() {
    #[cfg(target_env = "p2")]
    println!("{}", bindings::pie::telepathy::mind::read());
}
