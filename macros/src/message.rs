//! `#[derive(Message)]`.

use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::spanned::Spanned;
use syn::{DeriveInput, LitStr, Type};

/// What `#[message(...)]` says.
#[derive(Default)]
struct Options {
    type_name: Option<LitStr>,
    reply: Option<Type>,
    api_event: Option<Span>,
    event: Option<Span>,
    service: Option<LitStr>,
}

fn options(input: &DeriveInput) -> syn::Result<Options> {
    let mut options = Options::default();
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("message")) {
        attr.parse_nested_meta(|meta| {
            let once = |seen: bool| {
                if seen {
                    Err(meta.error("given twice"))
                } else {
                    Ok(())
                }
            };
            if meta.path.is_ident("type") {
                once(options.type_name.is_some())?;
                options.type_name = Some(meta.value()?.parse()?);
            } else if meta.path.is_ident("reply") {
                once(options.reply.is_some())?;
                options.reply = Some(meta.value()?.parse()?);
            } else if meta.path.is_ident("service") {
                once(options.service.is_some())?;
                options.service = Some(meta.value()?.parse()?);
            } else if meta.path.is_ident("event") {
                once(options.event.is_some())?;
                options.event = Some(meta.path.span());
            } else if meta.path.is_ident("api_event") {
                once(options.api_event.is_some())?;
                options.api_event = Some(meta.path.span());
            } else {
                return Err(meta.error(
                    "unknown key; expected `type`, `reply`, `api_event`, `event` or `service`",
                ));
            }
            Ok(())
        })?;
    }
    Ok(options)
}

/// The wire rule for service names: `[a-z][a-z0-9_-]*`, at most 100 bytes.
fn valid_service(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 100
        && matches!(chars.next(), Some('a'..='z'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_' | '-'))
}

fn check_type_name(lit: &LitStr, service_given: bool) -> syn::Result<()> {
    let name = lit.value();
    if name.is_empty() || name.len() > 255 || name.chars().any(|c| c.is_whitespace()) {
        return Err(syn::Error::new(
            lit.span(),
            "a message type is a dotted name without spaces, like \"vm.StartVm\"",
        ));
    }
    if name.split('.').any(str::is_empty) {
        return Err(syn::Error::new(
            lit.span(),
            "empty part in a dotted type name",
        ));
    }
    let service = name.split('.').next().unwrap_or_default();
    if !service_given && !valid_service(service) {
        return Err(syn::Error::new(
            lit.span(),
            format!(
                "the first word of a type names its service and must match [a-z][a-z0-9_-]*; \
                 `{service}` does not (or give `service = \"...\"`)"
            ),
        ));
    }
    Ok(())
}

pub(crate) fn expand(input: DeriveInput) -> syn::Result<TokenStream> {
    let options = options(&input)?;
    let ident = &input.ident;
    let Some(type_name) = options.type_name else {
        return Err(syn::Error::new(
            ident.span(),
            "#[derive(Message)] needs #[message(type = \"service.Name\")]",
        ));
    };
    check_type_name(&type_name, options.service.is_some())?;
    if let (Some(span), Some(_)) = (options.event, &options.reply) {
        return Err(syn::Error::new(
            span,
            "an event has no reply: give `event` or `reply`, not both",
        ));
    }
    if let (Some(span), None) = (options.api_event, &options.reply) {
        return Err(syn::Error::new(
            span,
            "`api_event` says how a request's reply travels: it needs `reply = Type`",
        ));
    }
    let service = match &options.service {
        Some(service) if !valid_service(&service.value()) => {
            return Err(syn::Error::new(
                service.span(),
                "a service name must match [a-z][a-z0-9_-]*",
            ));
        }
        Some(service) => quote! {
            fn service() -> &'static str { #service }
        },
        None => TokenStream::new(),
    };
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let mut out = quote! {
        impl #impl_generics ::cloudbus::Message for #ident #ty_generics #where_clause {
            const TYPE: &'static str = #type_name;
            #service
        }
    };
    if let Some(reply) = &options.reply {
        let style = options.api_event.map(|_| {
            quote! { const STYLE: ::cloudbus::ReplyStyle = ::cloudbus::ReplyStyle::ApiEvent; }
        });
        out.extend(quote! {
            impl #impl_generics ::cloudbus::Request for #ident #ty_generics #where_clause {
                type Reply = #reply;
                #style
            }
        });
    }
    if options.event.is_some() {
        out.extend(quote! {
            impl #impl_generics ::cloudbus::Event for #ident #ty_generics #where_clause {}
        });
    }
    Ok(out)
}
