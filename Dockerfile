# Minimal image for a snapcoord node (completed in a later issue).
FROM node:20-slim
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY . .
RUN npm run build
VOLUME ["/data"]
EXPOSE 7001 8108
ENTRYPOINT ["node", "dist/src/cli/main.js"]
