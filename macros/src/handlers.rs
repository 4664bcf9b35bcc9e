//! `#[handlers]`: every `async fn` of an impl block becomes a handler.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::spanned::Spanned;
use syn::{
    Attribute, Expr, FnArg, GenericArgument, ImplItem, ImplItemFn, ItemImpl, Pat, PathArguments,
    ReturnType, Type,
};

/// What a handler method handles, read from its shape.
enum Kind {
    Request,
    Message,
    Event,
    Deferred,
}

/// Removes the attribute named `name` from `attrs` and returns it.
fn take(attrs: &mut Vec<Attribute>, name: &str) -> syn::Result<Option<Attribute>> {
    let mut found = None;
    let mut error = None;
    attrs.retain(|a| {
        if !a.path().is_ident(name) {
            return true;
        }
        if found.is_some() {
            error = Some(syn::Error::new(a.span(), format!("#[{name}] given twice")));
        }
        found = Some(a.clone());
        false
    });
    match error {
        Some(error) => Err(error),
        None => Ok(found),
    }
}

/// Whether a return type reads `Result<(), _>`.
fn returns_unit_result(output: &ReturnType) -> bool {
    let ReturnType::Type(_, ty) = output else {
        return false;
    };
    let Type::Path(path) = &**ty else {
        return false;
    };
    let Some(last) = path.path.segments.last() else {
        return false;
    };
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return false;
    };
    matches!(
        args.args.first(),
        Some(GenericArgument::Type(Type::Tuple(t))) if t.elems.is_empty()
    )
}

const SHAPE: &str = "a handler is `async fn name(&self, message: M, ctx: Context) -> Result<..., ErrorCode>` \
     (or with a last `reply: ReplyPort<R::Reply>` parameter and no return value); \
     put async helpers in another impl block";

/// The registration of one handler method on the service builder.
/// A handler's registration, and the method computing its sync key if it has one.
type Registration = (TokenStream, Option<TokenStream>);

fn registration(method: &mut ImplItemFn) -> syn::Result<Option<Registration>> {
    if method.sig.asyncness.is_none() {
        return Ok(None);
    }
    let event = take(&mut method.attrs, "event")?;
    if let Some(attr) = &event
        && !matches!(attr.meta, syn::Meta::Path(_))
    {
        return Err(syn::Error::new(attr.span(), "#[event] takes no arguments"));
    }
    let sync_key = take(&mut method.attrs, "sync_key")?
        .map(|a| a.parse_args::<Expr>())
        .transpose()?;
    let sig = &method.sig;
    if !sig.generics.params.is_empty() {
        return Err(syn::Error::new(
            sig.generics.span(),
            "a handler cannot be generic",
        ));
    }
    let mut inputs = sig.inputs.iter();
    match inputs.next() {
        Some(FnArg::Receiver(r)) if r.reference.is_some() && r.mutability.is_none() => {}
        _ => return Err(syn::Error::new(sig.span(), SHAPE)),
    }
    let typed: Vec<_> = inputs
        .map(|arg| match arg {
            FnArg::Typed(t) => Ok(t),
            FnArg::Receiver(r) => Err(syn::Error::new(r.span(), SHAPE)),
        })
        .collect::<syn::Result<_>>()?;
    let kind = match (typed.len(), &event) {
        (3, None) => Kind::Deferred,
        (3, Some(attr)) => {
            return Err(syn::Error::new(
                attr.span(),
                "an event handler has no reply port",
            ));
        }
        (2, Some(_)) => Kind::Event,
        (2, None) if returns_unit_result(&sig.output) => Kind::Message,
        (2, None) => Kind::Request,
        _ => return Err(syn::Error::new(sig.inputs.span(), SHAPE)),
    };
    let message = &typed[0];
    let ty = &message.ty;
    let name = &sig.ident;
    let (key, key_method) = match sync_key {
        Some(expr) => {
            let binding = match &*message.pat {
                Pat::Ident(ident) => ident.ident.clone(),
                other => {
                    return Err(syn::Error::new(
                        other.span(),
                        "with #[sync_key], name the message parameter with a plain identifier",
                    ));
                }
            };
            // A method, so that the key can read `self` as well as the message.
            let method = format_ident!("__cloudbus_sync_key_{}", name);
            let key_method = quote! {
                #[doc(hidden)]
                #[allow(unused_variables)]
                fn #method(&self, #binding: &#ty) -> ::core::option::Option<::cloudbus::SyncKey> {
                    ::cloudbus::IntoSyncKey::into_sync_key(#expr)
                }
            };
            let key = quote! {
                ::core::option::Option::Some(
                    (|__this: &Self, __message: &#ty| __this.#method(__message))
                        as fn(&Self, &#ty) -> ::core::option::Option<::cloudbus::SyncKey>
                )
            };
            (key, Some(key_method))
        }
        None => (quote! { ::core::option::Option::None }, None),
    };
    let (msg, ctx) = (format_ident!("__message"), format_ident!("__ctx"));
    let registration = match kind {
        Kind::Deferred => {
            let port = format_ident!("__reply");
            quote! {
                .__deferred::<#ty, _, _>(
                    |__this: ::std::sync::Arc<Self>, #msg: #ty, #ctx: ::cloudbus::Context, #port| async move {
                        __this.#name(#msg, #ctx, #port).await
                    },
                    #key,
                )
            }
        }
        Kind::Request | Kind::Message | Kind::Event => {
            let method = match kind {
                Kind::Request => format_ident!("__request"),
                Kind::Message => format_ident!("__message"),
                _ => format_ident!("__event"),
            };
            quote! {
                .#method::<#ty, _, _>(
                    |__this: ::std::sync::Arc<Self>, #msg: #ty, #ctx: ::cloudbus::Context| async move {
                        __this.#name(#msg, #ctx).await
                    },
                    #key,
                )
            }
        }
    };
    Ok(Some((registration, key_method)))
}

pub(crate) fn expand(mut item: ItemImpl) -> syn::Result<TokenStream> {
    if let Some((_, path, _)) = &item.trait_ {
        return Err(syn::Error::new(
            path.span(),
            "#[handlers] goes on an inherent impl block (`impl MyService { ... }`)",
        ));
    }
    let mut registrations = Vec::new();
    let mut key_methods = Vec::new();
    for member in &mut item.items {
        if let ImplItem::Fn(method) = member
            && let Some((registration, key_method)) = registration(method)?
        {
            registrations.push(registration);
            key_methods.extend(key_method);
        }
    }
    for key_method in key_methods {
        item.items.push(syn::parse2(key_method)?);
    }
    if registrations.is_empty() {
        return Err(syn::Error::new(
            item.self_ty.span(),
            "#[handlers] found no `async fn` handler in this impl block",
        ));
    }
    let self_ty = &item.self_ty;
    let (impl_generics, _, where_clause) = item.generics.split_for_impl();
    Ok(quote! {
        #item

        impl #impl_generics ::cloudbus::Handlers for #self_ty #where_clause {
            fn register(
                builder: ::cloudbus::ServiceBuilder<Self>,
            ) -> ::cloudbus::ServiceBuilder<Self> {
                builder #(#registrations)*
            }
        }
    })
}
