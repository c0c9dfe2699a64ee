"""`python -m kvlab_kernel -f CONNECTION_FILE` runs the kernel (what Jupyter does);
`python -m kvlab_kernel install [--user | --sys-prefix | --prefix P] [--kvlab PATH]` installs
its kernelspec (name `kvlab`)."""

import sys


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "install":
        from .install import main as install

        sys.exit(install(sys.argv[2:]))

    import zmq
    from ipykernel.iostream import IOPubThread
    from ipykernel.kernelapp import IPKernelApp

    from .kernel import KvlabKernel

    class KvlabKernelApp(IPKernelApp):
        """IPKernelApp, listening only on the connection file's ports: IPKernelApp also binds a
        TCP port on 127.0.0.1 for the output of forked Python subprocesses (IOPubThread's
        pipe), which a wrapper kernel has no use for."""

        def init_iopub(self, context):
            self.iopub_socket = context.socket(zmq.PUB)
            self.iopub_socket.linger = 1000
            self.iopub_port = self._bind_socket(self.iopub_socket, self.iopub_port)
            self.configure_tornado_logger()
            self.iopub_thread = IOPubThread(self.iopub_socket, pipe=False)
            self.iopub_thread.start()
            self.iopub_socket = self.iopub_thread.background_socket

    KvlabKernelApp.launch_instance(kernel_class=KvlabKernel)


if __name__ == "__main__":
    main()
