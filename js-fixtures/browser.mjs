// Debian's Chromium, headless, driven by playwright-core (no browser download).
import { chromium } from 'playwright-core';

export const chromiumPath = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

/** Launches Chromium with the flags this closed network needs. */
export function launchBrowser() {
  return chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}

/**
 * Serves the demo page (and the unchanged-library app page at /app/) from an origin of its own (a different port than any Twine node), the
 * way a frontend is usually hosted. Resolves to { url, stop() }.
 */
export async function serveDemoElsewhere() {
  const http = await import('node:http');
  const fs = await import('node:fs/promises');
  const path = await import('node:path');
  const root = new URL('.', import.meta.url).pathname;
  const routes = [
    ['/demo/vendor/twine-client-library/', 'node_modules/twine-client-library/dist/'],
    ['/demo/vendor/socket.io-client/', 'node_modules/socket.io-client/dist/'],
    ['/demo/', 'demo/'],
    ['/app/', 'app/'],
  ];
  const types = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css' };
  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url, 'http://x');
    const route = routes.find(([prefix]) => url.pathname.startsWith(prefix));
    if (!route || url.pathname.includes('..')) return res.writeHead(404).end();
    let file = path.join(root, route[1], url.pathname.slice(route[0].length));
    if (file.endsWith('/')) file += 'index.html';
    try {
      const body = await fs.readFile(file);
      res.writeHead(200, { 'Content-Type': types[path.extname(file)] ?? 'application/octet-stream' }).end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    stop: () => new Promise((r) => server.close(r)),
  };
}
