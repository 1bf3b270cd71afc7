// Shared by the pages that show live progress: one poll of a progress URL. Resolves to its JSON, or
// rejects on a network error or an answer that is not 2xx (the caller retries later).
async function fetchProgress(url) {
  const response = await fetch(url, {headers: {"Accept": "application/json"}});
  if (!response.ok) throw new Error(response.status);
  return response.json();
}
