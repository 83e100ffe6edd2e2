// The Berth portal: a single page over the REST API (/v1) and the live events (/v1/events).
import { hasSession } from './api.js';

const main = document.getElementById('main');
main.textContent = hasSession() ? 'Signed in.' : 'Sign in to use Berth.';
