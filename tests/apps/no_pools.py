"""An app with no pool at all: sync handlers only."""
import uhttp.workers as _workers


class App(_workers.Dispatcher):
    @_workers.sync('/health')
    def health(self, client, path_params):
        client.respond({'status': 'ok'})


if __name__ == '__main__':
    App(port=0, address='127.0.0.1', pools=[]).run()
