//! Macros for [cloudbus](https://docs.rs/cloudbus): declare a message type
//! and a service's handlers once, in one place. Use them through the
//! `cloudbus` crate (`cloudbus::Message`, `cloudbus::handlers`), which
//! re-exports them.

mod handlers;
mod message;

use proc_macro::TokenStream;

/// Implements `cloudbus::Message` (and `Request` or `Event`) for a serde type.
///
/// ```ignore
/// #[derive(Clone, Debug, Serialize, Deserialize, cloudbus::Message)]
/// #[message(type = "vm.GetVm", reply = VmInfo)]
/// struct GetVm { uuid: String }
/// ```
///
/// Keys of `#[message(...)]`:
/// - `type = "service.Name"` (required): the wire name; its first word is
///   the service it goes to, checked here.
/// - `reply = Type`: a request answered with `Type`.
/// - `api_event`: with `reply`, the answer is published as an event
///   (a non-blocking API).
/// - `event`: an event, published to every subscriber.
/// - `service = "name"`: goes to this service instead of the type's first word.
#[proc_macro_derive(Message, attributes(message))]
pub fn derive_message(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    message::expand(input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Makes every `async fn` of an inherent `impl` block a handler of the
/// service whose state is that type, so a handler cannot be written and
/// then forgotten at registration.
///
/// The shape of each method says what it handles:
/// - `async fn x(&self, req: R, ctx: Context) -> Result<R::Reply, ErrorCode>`:
///   requests `R`;
/// - `... -> Result<(), ErrorCode>`: plain messages;
/// - `#[event] async fn x(&self, ev: E, ctx: Context) -> Result<(), ErrorCode>`:
///   events `E`, received by the service (its concurrency limit, panic
///   catching, statistics and graceful stop apply);
/// - `async fn x(&self, req: R, ctx: Context, reply: ReplyPort<R::Reply>)`:
///   requests answered later through the port.
///
/// `#[sync_key(expr)]` on a handler serializes the messages for which
/// `expr` (anything that converts into a `SyncKey`; it can read the
/// message parameter by its name) is equal. Methods that are not `async`
/// are left alone; an `async fn` of another shape is a compile error, so
/// put async helpers in a separate `impl` block.
#[proc_macro_attribute]
pub fn handlers(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        return syn::Error::new(
            proc_macro2::TokenStream::from(attr)
                .into_iter()
                .next()
                .map_or_else(proc_macro2::Span::call_site, |t| t.span()),
            "#[handlers] takes no arguments",
        )
        .into_compile_error()
        .into();
    }
    let item = syn::parse_macro_input!(item as syn::ItemImpl);
    handlers::expand(item)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}
