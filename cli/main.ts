// Placeholder: the CLI is being written (issue 7).
console.log('bcdr: not yet');
