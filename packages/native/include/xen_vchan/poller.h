// A libuv poll handle as a JS class, for addons whose device fd is pollable (evtchn, xenbus):
// `new Poller(fd, onReadable)`, `start()`, `stop()`, `close()`. onReadable(status) runs on the JS
// thread each time the fd is readable; status < 0 is a libuv error (the fd went bad).
//
// Lifetime: while started, the poller keeps itself (and so its callback and whatever the callback
// reaches) alive, as an active libuv handle keeps a socket alive: a channel that can still receive
// events must not vanish under its listeners. While stopped it holds nothing strongly, so an owner
// that nobody references any more can be collected and its finalizer can close the fd.
#pragma once

#include <napi.h>
#include <uv.h>

#include "xen_vchan/native.h"

namespace xen_vchan {

class Poller : public Napi::ObjectWrap<Poller> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Poller",
                       {InstanceMethod("start", &Poller::Start), InstanceMethod("stop", &Poller::Stop),
                        InstanceMethod("close", &Poller::Close)});
  }

  explicit Poller(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Poller>(info) {
    Napi::Env env = info.Env();
    // The callback lives as a property of this object, not as a strong reference from C++: a
    // strong reference would be a GC root, and the callback reaches the owner, which reaches us.
    info.This().As<Napi::Object>().DefineProperty(Napi::PropertyDescriptor::Value("callback", info[1], napi_default));
    callback_ = Napi::Weak(info[1].As<Napi::Function>());
    uv_loop_t* loop = nullptr;
    napi_get_uv_event_loop(env, &loop);
    handle_ = new uv_poll_t;
    handle_->data = this;
    int status = uv_poll_init(loop, handle_, ToFd(info[0]));
    if (status < 0) {
      delete handle_;
      handle_ = nullptr;
      ThrowErrno(env, -status, "uv_poll_init");
    }
  }

  ~Poller() override { CloseHandle(); }

 private:
  Napi::Value Start(const Napi::CallbackInfo& info) {
    if (handle_ == nullptr) return ThrowUsage(info.Env(), "poller is closed");
    int status = uv_poll_start(handle_, UV_READABLE, &Poller::OnReadable);
    if (status < 0) return ThrowErrno(info.Env(), -status, "uv_poll_start");
    if (!started_) Ref();
    started_ = true;
    return info.Env().Undefined();
  }

  Napi::Value Stop(const Napi::CallbackInfo& info) {
    if (handle_ != nullptr) uv_poll_stop(handle_);
    Release();
    return info.Env().Undefined();
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    CloseHandle();
    Release();
    return info.Env().Undefined();
  }

  // Drops the strong hold that Start took.
  void Release() {
    if (started_) Unref();
    started_ = false;
  }

  // The handle memory belongs to libuv until its close callback runs, so it is freed there.
  void CloseHandle() {
    if (handle_ == nullptr) return;
    handle_->data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(handle_), [](uv_handle_t* handle) { delete reinterpret_cast<uv_poll_t*>(handle); });
    handle_ = nullptr;
  }

  static void OnReadable(uv_poll_t* handle, int status, int) {
    auto* self = static_cast<Poller*>(handle->data);
    if (self == nullptr) return;
    Napi::Env env = self->Env();
    Napi::HandleScope scope(env);
    if (self->callback_.IsEmpty() || self->callback_.Value().IsEmpty()) return;
    // The callback reads status itself: an error (EBADF after a close) is passed as its argument.
    self->callback_.MakeCallback(env.Global(), {Napi::Number::New(env, status)});
    // A throw in the callback is left pending on the env: every later Node-API call (any other
    // poller's callback, any addon call) would then fail with the old exception, and the next
    // failing one would abort Node. Hand it to Node's uncaught-exception path instead, as a throw
    // in any other event callback goes.
    if (env.IsExceptionPending()) {
      Napi::Error error = env.GetAndClearPendingException();
      napi_fatal_exception(env, error.Value());
    }
  }

  uv_poll_t* handle_ = nullptr;
  bool started_ = false;
  Napi::FunctionReference callback_;
};

}  // namespace xen_vchan
