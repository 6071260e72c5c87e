struct Mailer;

impl Mailer {
    #[dq::actor]
    fn send_mail(&self, to: String) {
        let _ = to;
    }
}

fn main() {
    Mailer.send_mail(String::new());
}
